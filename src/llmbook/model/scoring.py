"""Scoring target tokens under a causal LM's logits: the one place that turns
logits into log p(target) (Chapters 5, 7, 8 and 13 all use it).

:func:`target_log_probs` takes next-token ``logits`` (batch, seq, vocab), the
``targets`` (batch, seq) that follow each position, and a ``mask`` (batch, seq) of
the positions that count; it returns the per-position log-probabilities (0 where
masked), or their sum or mean per sequence. The training loss
(:func:`llmbook.train.causal_lm_loss`), perplexity evaluation, DPO's answer
log-probabilities, the evaluation chapter's batched scoring and the memorization
test's log-perplexity are all this function plus a division.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["target_log_probs"]

REDUCTIONS = ("none", "sum", "mean")


def _check(logits: Tensor, targets: Tensor, mask: Tensor | None) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
        raise ValueError(f"logits must be (batch, seq, vocab), got shape {got}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"targets must be integer token ids, got {targets.dtype}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets must be (batch, seq) = {tuple(logits.shape[:2])} to match "
            f"logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    if mask is not None and mask.shape != targets.shape:
        raise ValueError(
            f"mask must be (batch, seq) = {tuple(targets.shape)} like targets, got "
            f"{tuple(mask.shape)}"
        )


def target_log_probs(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    *,
    reduction: str = "sum",
) -> Tensor:
    """log p(targets[b, t] | logits[b, t]) of a causal LM, in nats.

    logits: (batch, seq, vocab) next-token scores; targets: (batch, seq), the token
    that follows each position (already shifted); mask: (batch, seq), 1/True where
    the target counts (None: everywhere). A masked position may hold any id (a pad,
    -100); it contributes 0. Half-precision logits are scored in float32.

    ``reduction``: "none" -> (batch, seq) per-position log-probabilities, 0 where
    masked; "sum" -> (batch,) log p of each sequence's counted targets (the chain
    rule); "mean" -> (batch,) that sum per counted target (NaN for a row with none).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    _check(logits, targets, mask)
    targets = targets.long()
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    vocab_size = logits.shape[-1]
    bad = keep & ((targets < 0) | (targets >= vocab_size))
    if bad.any():
        raise ValueError(
            f"targets that count must lie in [0, {vocab_size}); found "
            f"{targets[bad][0].item()}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-softmax in half precision loses digits
    log_probs = torch.log_softmax(logits, dim=-1)  # (batch, seq, vocab)
    safe = torch.where(keep, targets, 0)  # any valid index; zeroed below
    picked = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (batch, seq)
    picked = torch.where(keep, picked, torch.zeros_like(picked))
    if reduction == "none":
        return picked
    total = picked.sum(dim=-1)  # (batch,)
    return total if reduction == "sum" else total / keep.sum(dim=-1)
