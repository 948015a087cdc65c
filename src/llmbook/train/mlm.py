"""Pretraining the course's masked-LM encoder (Chapters 5-7).

``MLMConfig`` (the encoder and its recipe), ``mlm_tokenizer`` (the course tokenizer
plus ``<|mask|>``), ``train_mlm`` (the loop), ``evaluate_mlm`` (masked-token accuracy,
top-5 accuracy and perplexity on held-out text under one fixed masking, beside the
unigram baseline's accuracy), ``most_frequent_tokens`` and ``fill_mask``.

The recipe is the causal LM's of :mod:`llmbook.train.loop` with BERT's loss
(:func:`llmbook.train.objectives.mlm_loss`: 15 % of the tokens chosen, 80/10/10) in place
of next-token prediction: the same window sampler, optimiser, schedule, clipping and
weight averaging. ``python -m llmbook.pretrain_mlm`` trains the shipped
``course-mlm``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from tqdm.auto import tqdm

from llmbook.data.batching import CourseData, window_iterator
from llmbook.data.tokenization import MASK_TOKEN, course_tokenizer
from llmbook.model.bert import EncoderConfig, MaskedLM
from llmbook.train.history import History
from llmbook.train.loop import update_ema
from llmbook.train.objectives import mlm_loss
from llmbook.train.step import lr_at, make_optimizer

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "MLMConfig",
    "mlm_tokenizer",
    "most_frequent_tokens",
    "train_mlm",
    "evaluate_mlm",
    "fill_mask",
]


def _course_mlm() -> EncoderConfig:
    # the course tokenizer's 2,048 tokens + <|mask|>
    return EncoderConfig(vocab_size=2049, context_length=128, d_model=128,
                              n_heads=4, n_layers=4, fused_attention=True)  # fmt: skip


@dataclass
class MLMConfig:
    """A masked-LM pretraining run: the encoder, the data and the recipe.

    ``model.vocab_size`` is the course tokenizer's size plus one: the last id is the
    mask token. Each step is ``batch_size`` windows of ``model.context_length``
    tokens; ``lr``, ``min_lr``, ``warmup_steps``, ``weight_decay`` and ``betas`` mean
    what they mean in :class:`~llmbook.train.TrainConfig` (``make_optimizer`` and
    ``lr_at`` read only those fields).
    """

    model: EncoderConfig = field(default_factory=_course_mlm)
    corpus: str = "python"
    batch_size: int = 16
    max_steps: int = 900
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    ema_decay: float = 0.99
    eval_every: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from JSON
            self.model = EncoderConfig(**self.model)
        self.betas = tuple(self.betas)
        for name in ("batch_size", "max_steps", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"warmup_steps must be in [0, max_steps={self.max_steps}], "
                f"got {self.warmup_steps}"
            )
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")

    @property
    def mask_id(self) -> int:
        return self.model.vocab_size - 1

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.context_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> MLMConfig:
        """A copy with some fields changed (``model`` may be a dict of changes)."""
        data = self.to_dict()
        data["model"] = {**data["model"], **changes.pop("model", {})}
        return MLMConfig(**{**data, **changes})


def mlm_tokenizer(vocab_size: int = 2048, corpus: str = "python") -> Tokenizer:
    """The course tokenizer with ``<|mask|>`` added as a special token, id
    ``vocab_size`` (a copy; the cached course tokenizer is not changed)."""
    tokenizer = Tokenizer.from_str(course_tokenizer(vocab_size, corpus).to_str())
    tokenizer.add_special_tokens([MASK_TOKEN])
    if tokenizer.token_to_id(MASK_TOKEN) != vocab_size:
        raise RuntimeError(f"{MASK_TOKEN} did not get id {vocab_size}")
    return tokenizer


def most_frequent_tokens(
    stream: Tensor, vocab_size: int, exclude: Sequence[int] = ()
) -> Tensor:
    """Token ids ranked by their count in ``stream`` (most frequent first), without
    ``exclude``: the unigram baseline's guesses, best first."""
    counts = torch.bincount(stream.flatten(), minlength=vocab_size).double()
    counts[list(exclude)] = -1.0
    ranked = counts.argsort(descending=True, stable=True)
    return ranked[: vocab_size - len(set(exclude))]


def train_mlm(
    model: MaskedLM,
    data: CourseData,
    config: MLMConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> History:
    """Pretrain ``model`` with BERT's masked-LM loss; returns the :class:`History`.

    Windows come from :func:`~llmbook.data.window_iterator` (seeded), the masking from
    its own generator seeded with ``config.seed + 1``; the end-of-document id is
    never chosen. ``history.val_perplexity`` records :func:`evaluate_mlm`'s
    perplexity on the masked validation tokens every ``config.eval_every`` steps.
    With ``config.ema_decay > 0``, ``model`` holds the averaged weights on return.
    """
    device = torch.device(device)
    if model.config != config.model:
        raise ValueError(
            f"the model's config {model.config} differs from config.model "
            f"{config.model}"
        )
    model.to(device).train()
    optimizer = make_optimizer(model, config)  # type: ignore[arg-type]
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else None
    # window_iterator yields L + 1 tokens (inputs and shifted targets); an encoder
    # needs no shift, so ask for context_length - 1 to get windows of context_length
    batches = window_iterator(
        data.train_stream, config.model.context_length - 1, config.batch_size,
        config.seed,
    )  # fmt: skip
    masking = torch.Generator().manual_seed(config.seed + 1)
    history = History()
    bar = tqdm(range(config.max_steps), desc="mlm", disable=not progress)
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(step, config)  # type: ignore[arg-type]
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = mlm_loss(
            model, next(batches).to(device), mask_id=config.mask_id,
            vocab_size=config.model.vocab_size,  # as Hugging Face's len(tokenizer)
            special_ids=(data.eos_id,), mask_prob=config.mask_prob,
            generator=masking,
        )  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            update_ema(ema, model, config.ema_decay)
        history.step.append(step + 1)
        history.loss.append(loss.item())
        history.lr.append(lr)
        history.tokens += config.tokens_per_step
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}")
        done = step + 1
        if done % config.eval_every == 0 or done == config.max_steps:
            history.seconds += time.perf_counter() - t0
            scored = model if ema is None else ema
            result = evaluate_mlm(scored, data.val_docs, eos_id=data.eos_id,
                                  mask_id=config.mask_id)  # fmt: skip
            history.eval_step.append(done)
            history.val_perplexity.append(result["perplexity"])
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}",
                            val_acc=f"{result['accuracy']:.3f}")  # fmt: skip
            t0 = time.perf_counter()
    bar.close()
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    return history


@torch.no_grad()
def evaluate_mlm(
    model: MaskedLM,
    docs: Sequence[Sequence[int]],
    *,
    eos_id: int,
    mask_id: int,
    frequent: Tensor | None = None,
    mask_prob: float = 0.15,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """Score ``model`` at masked positions of ``docs`` under one fixed masking.

    The stream ``doc0 EOS doc1 EOS ...`` is cut into blocks of ``context_length``
    (the last one padded and its padding not attended); a generator seeded with
    ``seed`` chooses each non-EOS token with probability ``mask_prob`` and every
    chosen token is replaced by ``mask_id`` (no 80/10/10: the same test every time).
    Returns ``accuracy`` and ``top5_accuracy`` (fractions of the masked tokens whose
    original id is the top guess / among the top 5), ``perplexity`` (exp of the mean
    cross-entropy over the masked tokens, in nats) and ``masked_tokens``; given
    ``frequent`` (:func:`most_frequent_tokens` of the training data), also the
    unigram baseline's ``unigram_accuracy`` and ``unigram_top5_accuracy``.
    """
    ctx = model.config.context_length
    stream = [token for doc in docs for token in (*doc, eos_id)]
    n_blocks = math.ceil(len(stream) / ctx)
    ids = torch.full((n_blocks * ctx,), eos_id, dtype=torch.long)
    ids[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    ids = ids.view(n_blocks, ctx)  # (n_blocks, ctx)
    real = (torch.arange(n_blocks * ctx) < len(stream)).view(n_blocks, ctx)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.bernoulli(torch.full(ids.shape, mask_prob), generator=generator)
    chosen = chosen.bool() & real & (ids != eos_id)
    inputs = ids.masked_fill(chosen, mask_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, correct, top5 = 0.0, 0, 0
    try:
        for i in range(0, n_blocks, batch_size):
            sl = slice(i, i + batch_size)
            logits = model(inputs[sl].to(device), real[sl].long().to(device))
            picked = logits[chosen[sl].to(device)].float()  # (n_masked, vocab_size)
            labels = ids[sl][chosen[sl]].to(device)  # (n_masked,)
            nll += F.cross_entropy(picked, labels, reduction="sum").item()
            best = picked.topk(5, dim=-1).indices  # (n_masked, 5)
            correct += int((best[:, 0] == labels).sum())
            top5 += int((best == labels[:, None]).any(-1).sum())
    finally:
        model.train(was_training)
    n = int(chosen.sum())
    if n == 0:
        raise ValueError("no token was masked: docs too short or mask_prob too low")
    result = {"accuracy": correct / n, "top5_accuracy": top5 / n,
              "perplexity": math.exp(nll / n), "masked_tokens": n}  # fmt: skip
    if frequent is not None:
        labels = ids[chosen]
        result["unigram_accuracy"] = float((labels == frequent[0]).float().mean())
        hits = torch.isin(labels, frequent[:5].to(labels.dtype))
        result["unigram_top5_accuracy"] = float(hits.float().mean())
    return result


@torch.no_grad()
def fill_mask(
    model: MaskedLM, tokenizer: PreTrainedTokenizerFast, text: str, k: int = 5
) -> list[tuple[str, float]]:
    """The ``k`` most probable tokens at the one mask token of ``text``, with their
    probabilities: ``fill_mask(model, tok, "def f(<|mask|>):")``. Leaves ``model``
    in eval mode."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    where = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    if len(where) != 1:
        raise ValueError(
            f"text must hold exactly one {tokenizer.mask_token}, found {len(where)}"
        )
    device = next(model.parameters()).device
    logits = model.eval()(torch.tensor([ids], device=device))[0, where[0]]
    probs, best = logits.float().softmax(-1).topk(k)
    return [
        (tokenizer.decode([int(t)]), float(p)) for p, t in zip(probs, best, strict=True)
    ]
