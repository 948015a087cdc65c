"""Canaries and exposure: measuring memorisation (Chapter 13).

The *secret sharer* test of Carlini et al. (2019): put a random secret (a *canary*,
such as ``"the secret code is 4821"``) into the training data, then ask how much more
likely the trained model finds it than the other secrets it could have been. With
``R`` the set of all possible secrets and the canary's *rank* among them when they are
sorted by the model's log-perplexity (rank 1: the model likes it best)::

    exposure = log2 |R| - log2 rank

Exposure is 0 when the canary ranks last and ``log2 |R|`` when it ranks first: the
number of bits of the secret the model gives away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from llmbook.model.scoring import target_log_probs

__all__ = [
    "sequence_log_perplexity",
    "canary_rank",
    "exposure",
    "random_secrets",
]


def sequence_log_perplexity(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    prefix_length: int,
    pad_id: int = 0,
    batch_size: int = 1024,
) -> Tensor:
    """Log-perplexity, in bits, of each sequence's tokens after its first
    ``prefix_length`` tokens: ``-sum_t log2 p(x_t | x_<t)`` over ``t >= prefix_length``.

    Args:
        model: a causal LM mapping ids (batch, seq) to logits (batch, seq, vocab).
        sequences: token-id lists, each longer than ``prefix_length``; lengths may
            differ (they are right-padded with ``pad_id``, which is never scored).
        prefix_length: how many leading tokens are context only (>= 1: the first
            token has no prediction).
        batch_size: sequences per forward pass.

    Returns:
        A float64 CPU tensor of shape ``(len(sequences),)``, in bits.
    """
    if not isinstance(prefix_length, int) or prefix_length < 1:
        raise ValueError(
            f"prefix_length must be an integer >= 1, got {prefix_length!r}"
        )
    if len(sequences) == 0:
        raise ValueError("sequences is empty: pass at least one token-id list")
    for i, seq in enumerate(sequences):
        if len(seq) <= prefix_length:
            raise ValueError(
                f"sequences[{i}] has {len(seq)} tokens, not more than prefix_length="
                f"{prefix_length}: nothing to score"
            )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            length = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
            scored = torch.zeros(len(chunk), length, dtype=torch.bool)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.as_tensor(list(seq))
                scored[row, prefix_length : len(seq)] = True
            # only positions prefix_length-1 .. end predict a scored token
            logits = model(ids[:, :-1].to(device))[:, prefix_length - 1 :]
            logp = target_log_probs(
                logits,
                ids[:, prefix_length:].to(device),
                scored[:, prefix_length:].to(device),
                reduction="none",
            )  # (b, n_scored), 0 on padding
            out.append(-logp.cpu().double().sum(dim=1) / math.log(2))
    return torch.cat(out)


def canary_rank(scores: Tensor | np.ndarray, index: int) -> int:
    """Rank of candidate ``index`` among all candidates by log-perplexity ``scores``
    (lower is more likely): 1 + the number of candidates strictly more likely.
    Ties count in the canary's favour, so equal scores give the better rank."""
    scores = torch.as_tensor(scores)
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(
            f"scores must be a non-empty 1-d array, got {tuple(scores.shape)}"
        )
    if not -scores.numel() <= index < scores.numel():
        raise IndexError(f"index {index} out of range for {scores.numel()} candidates")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    return 1 + int((scores < scores[index]).sum())


def exposure(scores: Tensor | np.ndarray, index: int) -> float:
    """Carlini et al.'s exposure of candidate ``index``: ``log2 |R| - log2 rank``,
    where ``scores`` (``|R|`` values) are the log-perplexities of every possible
    secret and ``rank`` is :func:`canary_rank`. In bits, between 0 and ``log2 |R|``."""
    rank = canary_rank(scores, index)
    return math.log2(len(scores)) - math.log2(rank)


def random_secrets(n: int, n_digits: int, seed: int = 0) -> list[str]:
    """``n`` distinct random secrets of ``n_digits`` decimal digits (leading zeros
    allowed), drawn with a seeded generator: the canaries' secret parts."""
    if n_digits < 1:
        raise ValueError(f"n_digits must be >= 1, got {n_digits}")
    if not 0 <= n <= 10**n_digits:
        raise ValueError(f"cannot draw {n} distinct secrets of {n_digits} digits")
    rng = np.random.default_rng(seed)
    picks = rng.choice(10**n_digits, size=n, replace=False)
    return [f"{int(p):0{n_digits}d}" for p in picks]
