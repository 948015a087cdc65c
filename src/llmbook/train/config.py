"""What defines a pretraining run, and the course's presets (Chapter 5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from llmbook.model.bert import EncoderConfig
from llmbook.model.gpt import GPTConfig

__all__ = ["OBJECTIVES", "TrainConfig", "PRESETS"]

#: What a run trains its model to predict: ``causal``, the next token (a
#: :class:`~llmbook.model.GPT`); ``masked``, BERT's masked tokens (a
#: :class:`~llmbook.model.MaskedLM`).
OBJECTIVES = {"causal": GPTConfig, "masked": EncoderConfig}


def _course_gpt() -> GPTConfig:
    return GPTConfig(
        vocab_size=2048,
        context_length=128,
        d_model=128,
        n_heads=4,
        n_layers=4,
        dropout=0.1,
        fused_attention=True,
    )


@dataclass
class TrainConfig:
    """Everything that defines a pretraining run: the model, the data, the recipe.

    ``objective`` is ``"causal"`` (next-token prediction; ``model`` is the
    :class:`~llmbook.model.GPTConfig` of the GPT trained, its ``vocab_size`` the
    course tokenizer's size) or ``"masked"`` (BERT's masked-LM loss with
    ``mask_prob``; ``model`` is an :class:`~llmbook.model.bert.EncoderConfig` whose
    last id, ``mask_id``, is the mask token added to the course tokenizer). The
    global batch is ``batch_size * grad_accum`` windows of ``model.context_length``
    tokens. The learning rate warms up linearly for ``warmup_steps`` and then
    follows a cosine down to ``min_lr`` at ``max_steps``.
    """

    model: GPTConfig | EncoderConfig = field(default_factory=_course_gpt)
    objective: str = "causal"
    mask_prob: float = 0.15  # the masked objective's share of chosen tokens
    # data
    corpus: str = "python"
    # optimisation
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 1800
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # > 0: evaluate and return a moving average of weights
    # evaluation and bookkeeping
    eval_every: int = 300
    seed: int = 0
    compile: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective must be one of {sorted(OBJECTIVES)}, got {self.objective!r}"
            )
        kind = OBJECTIVES[self.objective]
        if isinstance(self.model, dict):  # from JSON
            self.model = kind(**self.model)
        if not isinstance(self.model, kind):
            raise TypeError(
                f"the {self.objective} objective trains a {kind.__name__}, got "
                f"{type(self.model).__name__}"
            )
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        self.betas = tuple(self.betas)  # JSON gives lists back
        for name in ("batch_size", "grad_accum", "max_steps", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"warmup_steps must be in [0, max_steps={self.max_steps}], "
                f"got {self.warmup_steps}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got {self.min_lr} and {self.lr}")

    @property
    def mask_id(self) -> int:
        """The masked objective's mask token: the model's last id."""
        return self.model.vocab_size - 1

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.model.context_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed; ``model`` may be a dict of model fields
        to change (``replace(model={"dropout": 0.0}, max_steps=20)``) or a whole
        model config."""
        data = self.to_dict()
        model = changes.pop("model", {})
        if isinstance(model, (GPTConfig, EncoderConfig)):  # a whole new model
            data["model"] = asdict(model)
        else:
            data["model"] = {**data["model"], **model}
        return TrainConfig.from_dict({**data, **changes})


#: ``tiny``: seconds, for tests. ``cpu``: the course's GPT (context 128, 10,000 steps of
#: 4,096 tokens), 57 minutes for the whole command on an otherwise idle 2-core CPU with
#: bf16 autocast (the shipped run's config.json records 3,243 s of training steps; a
#: 4,000-step run had stopped at 0.72 times the 5-gram's perplexity, this one reaches
#: 0.56). ``draft``: a GPT about a fifth of
#: ``cpu``'s size with the same tokenizer and context, the draft model of speculative
#: decoding (Chapter 6); minutes on one CPU thread. ``gpu``: a wider, deeper model with
#: a longer context, for a Colab GPU (same data; it overfits sooner, see Chapter 5).
#: ``mlm``: the course's masked LM, ``course-mlm`` (BERT's architecture and loss,
#: 4 layers of width 128; ``python -m llmbook.pretrain_mlm``). Its recipe is what got
#: a BERT past the unigram plateau on two CPU cores: with windows of 128 tokens and a
#: schedule of 600-1,200 steps it stayed at masked-token accuracy 0.045-0.049 (about
#: 1.5x the unigram guess) whatever the masking rate (15-40 %), learning rate (1e-3;
#: 2e-3 diverged) or LayerNorm placement; windows of 32 tokens, 40 % masking and a
#: learning rate kept high for longer left the plateau between steps 500 and 1,000.
PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        model=GPTConfig(
            vocab_size=2048,
            context_length=32,
            d_model=32,
            n_heads=2,
            n_layers=1,
            dropout=0.1,
            fused_attention=True,
        ),
        batch_size=8,
        max_steps=30,
        warmup_steps=5,
        eval_every=10,
    ),  # fmt: skip
    "cpu": TrainConfig(max_steps=10000, eval_every=500, ema_decay=0.995),
    "draft": TrainConfig(
        model=GPTConfig(
            vocab_size=2048,
            context_length=128,
            d_model=64,
            n_heads=2,
            n_layers=2,
            dropout=0.0,
            fused_attention=True,
        ),
        max_steps=1200,
        eval_every=300,
        ema_decay=0.995,
    ),  # fmt: skip
    "gpu": TrainConfig(
        model=GPTConfig(
            vocab_size=2048,
            context_length=256,
            d_model=384,
            n_heads=6,
            n_layers=6,
            dropout=0.2,
            fused_attention=True,
        ),
        batch_size=32,
        max_steps=3000,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=200,
        ema_decay=0.999,
        eval_every=250,
        compile=True,
    ),  # fmt: skip
    "mlm": TrainConfig(
        objective="masked",
        model=EncoderConfig(
            vocab_size=2049,  # the course tokenizer's 2,048 tokens + <|mask|>
            context_length=32,  # short windows: see the note above PRESETS
            d_model=128,
            n_heads=4,
            n_layers=4,
            fused_attention=True,
        ),
        batch_size=128,  # 4,096 tokens a step, as the GPT's
        max_steps=3000,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=200,
        weight_decay=0.01,
        betas=(0.9, 0.98),
        mask_prob=0.4,
        ema_decay=0.99,
        eval_every=500,
    ),  # fmt: skip
}
