"""Reshaping next-token logits before a token is chosen (Chapter 6, section 3).

Every function takes logits of shape (batch, vocab_size) and returns a new tensor of
the same shape; removed tokens get ``-inf`` (probability 0 after the softmax). Each
one computes exactly what the ``transformers`` logits processor of the same name does
(``tests/unit/decoding/test_decoding.py`` checks them against it to 1e-6):

=====================  =====================================
ours                   transformers
=====================  =====================================
``repetition_penalty`` ``RepetitionPenaltyLogitsProcessor``
``apply_temperature``  ``TemperatureLogitsWarper``
``top_k_filter``       ``TopKLogitsWarper``
``top_p_filter``       ``TopPLogitsWarper``
``min_p_filter``       ``MinPLogitsWarper``
=====================  =====================================

:class:`SamplingConfig` bundles the settings and :func:`process_logits` applies them
in the order ``generate`` in ``transformers`` does (penalty, temperature, top-k,
top-p, min-p), so that the two draw the same token from the same random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SamplingConfig",
    "apply_temperature",
    "min_p_filter",
    "process_logits",
    "repetition_penalty",
    "top_k_filter",
    "top_p_filter",
]

NEG_INF = float("-inf")


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(
            "logits must be a float tensor of shape (batch, vocab_size), got "
            f"{tuple(logits.shape)} {logits.dtype}"
        )


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide by ``temperature`` (> 0): below 1 sharpens, above 1 flattens."""
    _check_logits(logits)
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0 here (0 means greedy), got {temperature}"
        )
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row (and any tied with the k-th)."""
    _check_logits(logits)
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[:, -1:]  # (batch, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose
    probabilities add up to at least ``p`` (0 < p <= 1); always keep the top one.

    Sorted from least to most likely, a token is dropped when the cumulative
    probability up to and including it is still <= 1 - p: the token that crosses
    the threshold is kept.
    """
    _check_logits(logits)
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    ascending, order = torch.sort(logits, dim=-1)  # (batch, vocab), least likely first
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - p
    drop_sorted[:, -1] = False  # the most likely token always stays
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, NEG_INF)


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """Keep tokens whose probability is at least ``min_p`` times the top token's."""
    _check_logits(logits)
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    probs = logits.softmax(dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    drop.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(drop, NEG_INF)


def repetition_penalty(logits: Tensor, ids: Tensor, penalty: float) -> Tensor:
    """Make every token that already occurs in ``ids`` (batch, seq) less likely:
    a positive logit is divided by ``penalty``, a negative one multiplied by it
    (so both move down when penalty > 1), as in the CTRL paper."""
    _check_logits(logits)
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    if ids.dim() != 2 or ids.shape[0] != logits.shape[0]:
        raise ValueError(
            f"ids must be (batch, seq) with batch {logits.shape[0]}, got {tuple(ids.shape)}"
        )
    seen = torch.gather(logits, 1, ids)  # (batch, seq)
    penalised = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, ids, penalised)


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``temperature=0`` is greedy decoding (the
    penalty still applies; the filters do not matter for an argmax)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1] or None, got {self.min_p}")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(
                f"repetition_penalty must be > 0 or None, got {self.repetition_penalty}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def process_logits(logits: Tensor, ids: Tensor, config: SamplingConfig) -> Tensor:
    """Apply ``config`` to next-token ``logits`` (batch, vocab) of sequences ``ids``
    (batch, seq): penalty, then (when sampling) temperature, top-k, top-p, min-p."""
    if config.repetition_penalty not in (None, 1.0):
        logits = repetition_penalty(logits, ids, config.repetition_penalty)
    if config.greedy:
        return logits
    if config.temperature != 1.0:
        logits = apply_temperature(logits, config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None and config.top_p < 1.0:
        logits = top_p_filter(logits, config.top_p)
    if config.min_p is not None:
        logits = min_p_filter(logits, config.min_p)
    return logits
