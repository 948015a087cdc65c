"""Pretraining the course's GPT: presets, the training loop, checkpoints, loading.

Chapter 5 builds this loop step by step; this module is the version later chapters
and the command line use::

    python -m llmbook.pretrain --preset cpu --out runs/course-gpt

reproduces the course's pretrained GPT (about 5.5 minutes on a 2-core CPU). The result
that ships with the package, in ``llmbook/weights/course-gpt/``, was made by exactly
that command, and :func:`from_pretrained` loads it in well under a second::

    from llmbook.pretrain import from_pretrained
    model = from_pretrained("course-gpt")

Determinism: the batch order comes from its own seeded ``torch.Generator``, dropout
from the seeded global RNG, so a run repeats bit for bit on the same machine with the
same number of threads. Another CPU (or thread count) can sum floating-point numbers
in another order; it then reproduces the same perplexity to within a fraction of a
percent, not bit for bit.

Perplexity is measured the way Chapter 1 measured the n-gram baseline
(:data:`llmbook.baselines.NGRAM_BASELINE`): per BPE token of ``course_tokenizer(2048)``
on the validation documents, counting one end-of-document prediction per document, so
the two numbers can be compared directly.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmbook.transformer import GPT, GPTConfig

__all__ = [
    "TrainConfig",
    "PRESETS",
    "CourseData",
    "course_data",
    "batch_iterator",
    "window_iterator",
    "lm_loss",
    "make_optimizer",
    "lr_at",
    "update_ema",
    "evaluate_perplexity",
    "History",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "save_pretrained",
    "from_pretrained",
    "model_flops_per_token",
    "main",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that defines a pretraining run: model size, data, optimisation.

    The global batch is ``batch_size * grad_accum`` blocks of ``context_length``
    tokens. The learning rate warms up linearly for ``warmup_steps`` and then follows
    a cosine down to ``min_lr`` at ``max_steps``.
    """

    # model
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    context_length: int = 64
    dropout: float = 0.1
    # data
    corpus: str = "docstrings"
    vocab_size: int = 2048
    sampling: str = (
        "windows"  # "windows": random offsets; "blocks": fixed packed blocks
    )
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
        if self.sampling not in ("windows", "blocks"):
            raise ValueError(
                f"sampling must be 'windows' or 'blocks', got {self.sampling!r}"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got {self.min_lr} and {self.lr}")
        self.model_config()  # validates the model fields

    def model_config(self) -> GPTConfig:
        """The :class:`GPTConfig` of the model this run trains."""
        return GPTConfig(
            vocab_size=self.vocab_size,
            context_length=self.context_length,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            dropout=self.dropout,
            fused_attention=True,
        )

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.context_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)


#: ``tiny``: seconds, for tests. ``cpu``: the course's GPT, about 5.5 minutes on a 2-core
#: CPU. ``gpu``: a wider, deeper model with a longer context and more steps, for a
#: Colab GPU (same data; it overfits the small corpus sooner, see Chapter 5).
PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        d_model=32,
        n_layers=1,
        n_heads=2,
        context_length=32,
        batch_size=8,
        max_steps=30,
        warmup_steps=5,
        eval_every=10,
    ),  # fmt: skip
    "cpu": TrainConfig(ema_decay=0.995),
    "gpu": TrainConfig(
        d_model=384,
        n_layers=6,
        n_heads=6,
        context_length=256,
        dropout=0.2,
        batch_size=32,
        max_steps=3000,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=200,
        ema_decay=0.999,
        eval_every=250,
        compile=True,
    ),  # fmt: skip
}


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass
class CourseData:
    """The course corpus, tokenised: the training stream, the same stream cut into
    packed blocks, and the validation documents."""

    train_blocks: Tensor  # (n_blocks, context_length + 1) long
    val_docs: list[list[int]]  # token ids of each validation document, no EOS
    eos_id: int
    context_length: int
    train_stream: Tensor  # (n_tokens,) long: doc0 EOS doc1 EOS ...

    @property
    def train_tokens(self) -> int:
        return self.train_blocks.shape[0] * self.context_length

    @property
    def val_predictions(self) -> int:
        """Number of tokens perplexity averages over (each document + its EOS)."""
        return sum(len(doc) + 1 for doc in self.val_docs)


def course_data(
    context_length: int, vocab_size: int = 2048, corpus: str = "docstrings"
) -> CourseData:
    """Tokenise the course split (Chapter 2) and pack the training documents."""
    from llmbook.data import course_splits, course_tokenizer, encode_docs, pack_blocks

    tokenizer = course_tokenizer(vocab_size, corpus=corpus)
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    splits = course_splits(corpus)
    train = encode_docs(tokenizer, splits.train)
    val = encode_docs(tokenizer, splits.val)
    stream = [token for doc in train for token in (*doc, eos_id)]
    return CourseData(
        pack_blocks(train, context_length, eos_id),
        val,
        eos_id,
        context_length,
        torch.tensor(stream, dtype=torch.long),
    )


def batch_iterator(
    blocks: Tensor, batch_size: int, seed: int = 0, start_step: int = 0
) -> Iterator[Tensor]:
    """Endless batches of blocks, (batch_size, context_length + 1): a fresh seeded
    permutation each epoch, no block repeated within an epoch.

    ``start_step`` skips that many batches, which is how a resumed run continues with
    exactly the batches the uninterrupted run would have seen.
    """
    if blocks.ndim != 2:
        raise ValueError(
            f"blocks must be 2-D (n_blocks, L + 1), got {tuple(blocks.shape)}"
        )
    n = blocks.shape[0]
    if n < batch_size:
        raise ValueError(f"{n} blocks are fewer than one batch of {batch_size}")
    per_epoch = n // batch_size  # the incomplete tail of each permutation is dropped
    generator = torch.Generator().manual_seed(seed)
    epoch, step = 0, 0
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(per_epoch):
            if step >= start_step:
                yield blocks[order[i * batch_size : (i + 1) * batch_size]]
            step += 1
        epoch += 1


def window_iterator(
    stream: Tensor,
    context_length: int,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
) -> Iterator[Tensor]:
    """Endless batches of windows, (batch_size, context_length + 1), that start at
    seeded random offsets of the token ``stream`` (nanoGPT's sampler).

    Unlike fixed blocks, a window can start anywhere, so over many epochs the model
    sees each token at many positions and with many different left contexts: a
    cheap and effective regulariser when a small corpus is read many times.
    ``start_step`` skips that many batches (for resuming).
    """
    if stream.ndim != 1:
        raise ValueError(f"stream must be 1-D, got shape {tuple(stream.shape)}")
    n_starts = stream.numel() - context_length  # last start leaves L + 1 tokens
    if n_starts < 1:
        raise ValueError(
            f"{stream.numel()} tokens are too few for one window of "
            f"context_length + 1 = {context_length + 1}"
        )
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context_length + 1)
    step = 0
    while True:
        starts = torch.randint(n_starts, (batch_size, 1), generator=generator)
        if step >= start_step:
            yield stream[starts + offsets]
        step += 1


# --------------------------------------------------------------------------------------
# Loss, optimiser, schedule
# --------------------------------------------------------------------------------------


def lm_loss(model: nn.Module, batch: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats) of a (batch, L + 1) block batch."""
    x, y = batch[:, :-1], batch[:, 1:]  # (batch, L) each
    logits = model(x)  # (batch, L, vocab_size)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (GPT-2's convention): biases,
    LayerNorm gains and the position table are not decayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_matrix = param.dim() >= 2 and "pos_emb" not in name
        (decay if is_matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup, cosine decay."""
    from llmbook.optim import cosine_schedule

    return cosine_schedule(
        step + 1,
        max_lr=config.lr,
        warmup_steps=config.warmup_steps,
        total_steps=config.max_steps,
        min_lr=config.min_lr,
    )


@torch.no_grad()
def update_ema(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model``, parameter by parameter.

    Averaging the weights of the last few hundred steps cancels much of the noise of
    the individual steps (Polyak averaging); the average usually scores better on
    held-out text than the last iterate, most of all while the learning rate is
    still high.
    """
    for avg, param in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(param.detach(), 1.0 - decay)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module,
    docs: Sequence[Sequence[int]],
    eos_id: int,
    *,
    stride: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> float:
    """Perplexity per token of ``docs``, on the n-gram baseline's terms.

    The stream ``EOS doc0 EOS doc1 EOS ...`` is scored left to right, so every token of
    every document and one EOS per document is predicted exactly once (the leading EOS
    plays the n-gram's ``<s>``). Windows of ``context_length`` tokens advance by
    ``stride`` (default half the context); each window scores only its last ``stride``
    targets, so every prediction sees at least ``context_length - stride`` tokens of
    context, except at the very start.
    """
    config = model.config
    ctx = config.context_length
    stride = ctx // 2 if stride is None else stride
    if not 1 <= stride <= ctx:
        raise ValueError(f"stride must be in [1, context_length={ctx}], got {stride}")
    if not docs:
        raise ValueError("docs is empty: nothing to evaluate")
    device = next(model.parameters()).device if device is None else torch.device(device)
    stream = [eos_id]
    for doc in docs:
        stream.extend(doc)
        stream.append(eos_id)
    data = torch.tensor(stream, dtype=torch.long)
    n_targets = len(stream) - 1  # target t is data[t + 1], predicted from data[: t + 1]
    windows = []  # (start, first scored offset, length)
    scored = 0
    while scored < n_targets:
        start = max(0, min(scored + stride - ctx, n_targets - ctx))
        end = min(start + ctx, n_targets)
        windows.append((start, scored - start, end - start))
        scored = end
    was_training = model.training
    model.eval()
    total_nll, count = 0.0, 0
    try:
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            length = max(n for _, _, n in chunk)
            x = torch.full((len(chunk), length), eos_id, dtype=torch.long)
            y = torch.full((len(chunk), length), -100, dtype=torch.long)
            for row, (start, first, n) in enumerate(chunk):
                x[row, :n] = data[start : start + n]
                y[row, first:n] = data[start + first + 1 : start + n + 1]
            logits = model(x.to(device)).float()  # (batch, length, vocab_size)
            nll = F.cross_entropy(
                logits.flatten(0, 1), y.to(device).flatten(), reduction="sum"
            )  # positions labelled -100 are skipped
            total_nll += nll.item()
            count += int((y != -100).sum())
    finally:
        model.train(was_training)
    if count != n_targets:  # every prediction exactly once
        raise RuntimeError(f"scored {count} targets, expected {n_targets}")
    return math.exp(total_nll / count)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """What a run records: per-step loss and lr, periodic validation perplexity."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    val_perplexity: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    from llmbook.utils import autocast_dtype

    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train(
    model: GPT,
    data: CourseData,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    steps: int | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[int, History], None] | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` on ``data`` with ``config``; returns the :class:`History`.

    Args:
        steps: stop after this optimiser step (default ``config.max_steps``); the
            schedule still follows ``max_steps``, so a run stopped early and resumed
            equals one run straight through.
        checkpoint_path: write a checkpoint there at every evaluation and at the end.
        resume: continue from ``checkpoint_path`` (model, optimiser, step, RNG).
        callback: called as ``callback(step, history)`` after every evaluation (the
            chapter's live plot).
        progress: show a ``tqdm`` bar with the running loss.

    With ``config.ema_decay > 0`` the run keeps an exponential moving average of the
    weights (:func:`update_ema`), the validation perplexity is the average's, and on
    return ``model`` holds the averaged weights (checkpoints keep both).
    On a CUDA device the forward pass runs under autocast (bfloat16 where supported,
    else float16 with a ``GradScaler``); ``config.compile`` wraps the model in
    ``torch.compile``.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    if model.config.context_length != data.context_length:
        raise ValueError(
            f"model context_length {model.config.context_length} != data's "
            f"{data.context_length}"
        )
    model.to(device)
    optimizer = make_optimizer(model, config)
    history = History()
    start = 0
    ema = None
    if config.ema_decay > 0:
        ema = copy.deepcopy(model).requires_grad_(False)
    if resume:
        if checkpoint_path is None or not Path(checkpoint_path).exists():
            raise FileNotFoundError(
                f"resume=True but no checkpoint at {checkpoint_path}"
            )
        start, history = load_checkpoint(checkpoint_path, model, optimizer, ema)
    stop = config.max_steps if steps is None else min(steps, config.max_steps)
    dtype = None
    if device.type == "cuda":
        from llmbook.utils import autocast_dtype

        dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    forward = torch.compile(model) if config.compile else model
    skip = start * config.grad_accum
    if config.sampling == "windows":
        batches = window_iterator(
            data.train_stream, data.context_length, config.batch_size, config.seed, skip
        )
    else:
        batches = batch_iterator(
            data.train_blocks, config.batch_size, config.seed, skip
        )
    model.train()
    bar = tqdm(range(start, stop), desc="train", disable=not progress, initial=start,
               total=stop)  # fmt: skip
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            batch = next(batches).to(device, non_blocking=True)
            with _autocast(device):
                loss = lm_loss(forward, batch) / config.grad_accum
            scaler.scale(loss).backward()
            loss_sum += loss.item()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            update_ema(ema, model, config.ema_decay)
        history.step.append(step + 1)
        history.loss.append(loss_sum)
        history.lr.append(lr)
        history.tokens += config.tokens_per_step
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        done = step + 1
        if done % config.eval_every == 0 or done == stop:
            history.seconds += time.perf_counter() - t0
            scored = model if ema is None else ema
            ppl = evaluate_perplexity(scored, data.val_docs, data.eos_id)
            history.eval_step.append(done)
            history.val_perplexity.append(ppl)
            bar.set_postfix(loss=f"{loss_sum:.3f}", val_ppl=f"{ppl:.1f}")
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_path, model, optimizer, done, config, history, ema
                )
            if callback is not None:
                callback(done, history)
            t0 = time.perf_counter()
    bar.close()
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    return history


# --------------------------------------------------------------------------------------
# Checkpoints and pretrained weights
# --------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    history: History,
    ema: nn.Module | None = None,
) -> Path:
    """Everything needed to resume: weights, optimiser moments, step, RNG, history
    (and the weight average, when the run keeps one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": config.to_dict(),
        "history": history.to_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: nn.Module | None = None,
) -> tuple[int, History]:
    """Restore a :func:`save_checkpoint` file; returns ``(step, history)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if "ema" not in state:
            raise ValueError(f"{path} holds no weight average (ema_decay was 0)")
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], History(**state["history"])


def save_pretrained(
    model: GPT, directory: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (the Hugging Face layout)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = asdict(model.config)
    (directory / "config.json").write_text(
        json.dumps({"model": config, **(metadata or {})}, indent=2) + "\n"
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight", None)  # tied to tok_emb.weight: stored once
    save_file(state, str(directory / "model.safetensors"))
    return directory


def from_pretrained(
    name_or_path: str | Path = "course-gpt", device: str | torch.device = "cpu"
) -> GPT:
    """Load a model saved by :func:`save_pretrained`: a name shipped with the package
    (``"course-gpt"``) or a directory. Returns it in eval mode."""
    from safetensors.torch import load_file

    directory = Path(name_or_path)
    if not directory.is_dir():
        directory = WEIGHTS_DIR / str(name_or_path)
    config_file = directory / "config.json"
    weights_file = directory / "model.safetensors"
    for needed in (config_file, weights_file):
        if not needed.exists():
            shipped = (
                sorted(p.name for p in WEIGHTS_DIR.iterdir())
                if WEIGHTS_DIR.is_dir()
                else []
            )
            raise FileNotFoundError(
                f"{needed} not found; give a directory written by save_pretrained or "
                f"one of the shipped models {shipped} (make one with "
                f"`python -m llmbook.pretrain --preset cpu --out DIR`)"
            )
    meta = json.loads(config_file.read_text())
    model = GPT(GPTConfig(**meta["model"]))
    state = load_file(str(weights_file))
    state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.to(device).eval()


def pretrained_metadata(name_or_path: str | Path = "course-gpt") -> dict[str, Any]:
    """The ``config.json`` of a pretrained model: model, training config, results."""
    directory = Path(name_or_path)
    if not directory.is_dir():
        directory = WEIGHTS_DIR / str(name_or_path)
    return json.loads((directory / "config.json").read_text())


def model_flops_per_token(config: GPTConfig, training: bool = True) -> int:
    """Matmul FLOPs per token of ``GPT(config)`` (the PaLM paper's accounting).

    Forward: 2 FLOPs per weight of every matmul (the blocks and the LM head; the
    embedding lookups are not matmuls) plus ``4 * n_layers * context_length *
    d_model`` for attention's two (seq x seq) products, averaged over the positions
    as if every query saw the whole context. Training is 3x forward (backward costs
    twice the forward).
    """
    d, n_layers = config.d_model, config.n_layers
    per_block = 4 * d * d + 2 * d * config.d_ff  # q, k, v, out + two FFN matrices
    matmul_weights = n_layers * per_block + config.vocab_size * d  # + LM head
    forward = 2 * matmul_weights + 4 * n_layers * config.context_length * d
    return 3 * forward if training else forward


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m llmbook.pretrain``: train a preset and save it with its results."""
    from llmbook.baselines import NGRAM_BASELINE
    from llmbook.utils import get_device, seed_everything

    parser = argparse.ArgumentParser(
        prog="python -m llmbook.pretrain", description=main.__doc__
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", required=True, help="directory for the trained model")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument(
        "--device", default=None, help="cuda, mps or cpu (default: best)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--resume", action="store_true", help="resume from OUT/checkpoint.pt"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.from_dict(PRESETS[args.preset].to_dict())
    if args.steps is not None:
        config = TrainConfig.from_dict(
            {**config.to_dict(), "max_steps": args.steps,
             "warmup_steps": min(config.warmup_steps, args.steps)}
        )  # fmt: skip
    if args.no_compile:
        config.compile = False
    device = get_device(args.device)
    if device.type == "cpu":
        config.compile = False  # compiling costs more than it saves in a 5-minute run
    seed_everything(config.seed)
    out = Path(args.out)
    data = course_data(config.context_length, config.vocab_size, config.corpus)
    model = GPT(config.model_config())
    history = train(
        model,
        data,
        config,
        device=device,
        checkpoint_path=out / "checkpoint.pt",
        resume=args.resume,
        progress=not args.quiet,
    )
    model.cpu()
    val_ppl = evaluate_perplexity(model, data.val_docs, data.eos_id)
    results = {
        "preset": args.preset,
        "train_config": config.to_dict(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens_seen": history.tokens,
        "train_seconds": round(history.seconds, 1),
        "tokens_per_second": round(history.tokens_per_second, 1),
        "val_perplexity": val_ppl,
        "ngram_baseline_perplexity": NGRAM_BASELINE["perplexity"],
        "history": {
            "eval_step": history.eval_step,
            "val_perplexity": history.val_perplexity,
        },
    }
    save_pretrained(model, out, {"results": results})
    (out / "checkpoint.pt").unlink(missing_ok=True)
    print(
        f"{args.preset}: {results['parameters']:,} parameters, "
        f"{history.tokens:,} tokens in {history.seconds:.0f} s "
        f"({history.tokens_per_second:,.0f} tokens/s); validation perplexity "
        f"{val_ppl:.2f} (n-gram baseline {NGRAM_BASELINE['perplexity']:.2f}); "
        f"saved to {out}"
    )
    return results


if __name__ == "__main__":
    main()
