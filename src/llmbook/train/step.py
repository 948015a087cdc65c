"""One training step and the loop of steps, each written once (Chapter 5).

Every training run of the course steps through :func:`run_steps`, which calls
:func:`train_step`: the pretraining loop (:func:`llmbook.train.loop.train`: the GPT,
the masked LM, Chapter 10's MoE study), LoRA instruction tuning
(:func:`llmbook.finetune.sft.lora_tune`: ``course-gpt-sft`` and Chapter 12's reader)
and the translator (:func:`llmbook.translate.train_mt`). Data-parallel training
(:mod:`llmbook.train.ddp`) and the throughput benchmark call :func:`train_step`
directly. Only what they feed it differs: batches, loss, learning rate, and what
happens after a step. Also here: the loss, the optimiser with the one weight-decay
rule the course uses, and the learning-rate schedule.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from llmbook.train.config import TrainConfig
from llmbook.train.optim import param_groups_for_weight_decay
from llmbook.train.schedule import cosine_schedule
from llmbook.utils import autocast_dtype

__all__ = [
    "lm_loss",
    "make_optimizer",
    "lr_at",
    "cpu_has_bf16",
    "train_dtype",
    "autocast_context",
    "train_step",
    "run_steps",
]


def lm_loss(model: nn.Module, batch: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats) of a (batch, L + 1) batch of windows."""
    x, y = batch[:, :-1], batch[:, 1:]  # (batch, L) each
    logits = model(x)  # (batch, L, vocab_size)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the weight-decay rule of Chapter 5
    (:func:`~llmbook.train.optim.param_groups_for_weight_decay`): matrices and
    embeddings decay, biases and LayerNorm parameters do not."""
    groups = param_groups_for_weight_decay(model, config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup, cosine decay."""
    return cosine_schedule(
        step + 1,
        max_lr=config.lr,
        warmup_steps=config.warmup_steps,
        total_steps=config.max_steps,
        min_lr=config.min_lr,
    )


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (the ``avx512_bf16`` or
    ``amx_bf16`` instructions), read from ``/proc/cpuinfo`` on Linux.

    Only with them does bf16 autocast speed up a CPU training step (the course
    GPT's, about 1.2x on an AVX512-BF16 CPU); an earlier measurement on a CPU
    without them found the step ten times slower, as PyTorch then emulates bf16.
    Elsewhere (macOS, Windows) it answers False.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not cpuinfo.exists():
        return False
    flags: set[str] = set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def train_dtype(
    device: str | torch.device, cpu_bf16: bool = False
) -> torch.dtype | None:
    """The dtype a training step's forward pass autocasts to on ``device``, or None.

    CUDA: bf16 where supported, else fp16 (:func:`llmbook.utils.autocast_dtype`).
    CPU: bf16 when ``cpu_bf16`` is asked for and :func:`cpu_has_bf16`, else None
    (fp32). MPS: None.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16 and cpu_has_bf16() else None
    return autocast_dtype(device)


def autocast_context(
    device: str | torch.device, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager:
    """Mixed precision where it pays, else a no-op: bf16/fp16 autocast on CUDA, and
    bf16 on a CPU with bf16 units when ``cpu_bf16`` (see :func:`train_dtype`)."""
    device = torch.device(device)
    dtype = train_dtype(device, cpu_bf16)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[Any],
    *,
    lr: float | None = None,
    grad_clip: float | None = 1.0,
    scaler: torch.amp.GradScaler | None = None,
    backward: Callable[[Tensor], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    loss_fn: Callable[[nn.Module, Any], Tensor] | None = None,
) -> Tensor:
    """One optimiser step on the mean loss over ``micro_batches``.

    Each micro-batch contributes ``loss_fn(model, batch) / n_micro`` to the gradient
    (gradient accumulation: the same update as one batch of them all). ``loss_fn``
    is :func:`lm_loss` of a (batch, L + 1) batch of windows when None; the masked
    objective passes BERT's loss (:func:`llmbook.train.loop.objective_loss`), the
    translator a (source, lengths, target) tuple's loss, instruction tuning the
    answer-only loss (:func:`llmbook.finetune.sft.answer_loss`). Then
    the gradient norm is clipped to ``grad_clip``, the optimiser steps with
    learning rate ``lr`` (unchanged if None), and the gradients are cleared.

    Args:
        model: the module to differentiate (plain, compiled or DDP-wrapped).
        backward: how to backpropagate a loss (default ``loss.backward()``; e.g.
            ``accelerator.backward``).
        scaler: a ``GradScaler`` for float16 autocast; ``None`` for fp32/bf16.
        autocast: a factory of the context the forward pass runs in.

    Returns the mean loss as a 0-dim tensor on the model's device, not a Python
    float: reading it (``.item()``) waits for the device, so callers decide when.
    """
    micro_batches = list(micro_batches)
    if not micro_batches:
        raise ValueError("train_step needs at least one micro-batch")
    loss_fn = loss_fn or lm_loss
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    n = len(micro_batches)
    total = None
    for batch in micro_batches:
        with autocast():
            loss = loss_fn(model, batch) / n
        scaled = scaler.scale(loss) if scaler is not None else loss
        if backward is None:
            scaled.backward()
        else:
            backward(scaled)
        total = loss.detach() if total is None else total + loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Any],
    *,
    stop: int,
    lr: Callable[[int], float],
    loss_at: Callable[[int], Callable[[nn.Module, Any], Tensor]] = lambda step: lm_loss,
    start: int = 0,
    grad_accum: int = 1,
    grad_clip: float | None = 1.0,
    scaler: torch.amp.GradScaler | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    forward: nn.Module | None = None,
    after_step: Callable[[int, float], dict[str, str] | None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Optimiser steps ``start`` to ``stop - 1`` (0-based), each a :func:`train_step`.

    Step ``step`` takes the next ``grad_accum`` micro-batches from ``batches``, the
    loss ``loss_at(step)`` and the learning rate ``lr(step)``; ``grad_clip``,
    ``scaler`` and ``autocast`` go to :func:`train_step` as they are, and the forward
    pass runs through ``forward`` (a compiled model, say) when given, else ``model``.
    After the step, ``after_step(step, loss)`` does what a run adds (weight
    averaging, evaluation, checkpoints, logging); what it returns is shown beside
    the loss on the ``tqdm`` bar. Returns the loss of every step, as floats.
    """
    model.train()
    losses = []
    bar = tqdm(range(start, stop), desc=desc, disable=not progress,
               initial=start, total=stop)  # fmt: skip
    for step in bar:
        micro = [next(batches) for _ in range(grad_accum)]
        loss = train_step(
            model if forward is None else forward,
            optimizer,
            micro,
            lr=lr(step),
            grad_clip=grad_clip,
            scaler=scaler,
            autocast=autocast,
            loss_fn=loss_at(step),
        ).item()
        losses.append(loss)
        shown = after_step(step, loss) if after_step is not None else None
        bar.set_postfix(loss=f"{loss:.3f}", **(shown or {}))
    bar.close()
    return losses
