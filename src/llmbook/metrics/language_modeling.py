"""Perplexity per token and per word, bits per byte, and batched scoring of token
sequences by a causal LM on any device (Chapter 8).

All three numbers come from one quantity, the total negative log-likelihood ``nll``
(nats) a model assigns to a text, divided by a different count:

* perplexity per token = exp(nll / tokens): depends on the tokenizer (a tokenizer
  with longer tokens has fewer, harder predictions);
* perplexity per word = exp(nll / words): words split on whitespace, so it is fairer
  across tokenizers of one language, but "word" is still a convention;
* bits per byte = nll / (bytes * ln 2): the cost of the text in bits per UTF-8 byte.
  Bytes do not depend on any model, so this is the unit that compares models with
  different tokenizers (a word model, a BPE model and a byte model) on the same text.

Counting convention (the same for every model): each document is predicted in full,
plus ONE end-of-document event, which counts as one token, one word and one byte.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmbook.model.scoring import target_log_probs
from llmbook.utils import autocast_dtype, get_device

__all__ = [
    "perplexity",
    "bits_per_byte",
    "text_counts",
    "LMScore",
    "sliding_windows",
    "score_sequences",
    "target_log_probs",
]


def perplexity(nll: float, n: int) -> float:
    """exp(nll / n): ``nll`` in nats summed over ``n`` predictions (tokens, words)."""
    if n <= 0:
        raise ValueError(f"perplexity needs a positive count, got {n}")
    return math.exp(nll / n)


def bits_per_byte(nll: float, n_bytes: int) -> float:
    """nll (nats) / (bytes * ln 2): bits per UTF-8 byte of the scored text."""
    if n_bytes <= 0:
        raise ValueError(f"bits_per_byte needs a positive byte count, got {n_bytes}")
    return nll / (n_bytes * math.log(2))


def text_counts(docs: Sequence[str]) -> dict[str, int]:
    """Words (whitespace-separated) and UTF-8 bytes of ``docs``, each plus one per
    document for its end (see the module docstring)."""
    return {
        "words": sum(len(d.split()) + 1 for d in docs),
        "bytes": sum(len(d.encode("utf-8")) + 1 for d in docs),
    }


@dataclass
class LMScore:
    """A model's total NLL (nats) on a text and the text's counts."""

    nll: float
    tokens: int
    words: int
    bytes: int

    @property
    def token_perplexity(self) -> float:
        return perplexity(self.nll, self.tokens)

    @property
    def word_perplexity(self) -> float:
        return perplexity(self.nll, self.words)

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.nll, self.bytes)


def sliding_windows(
    length: int, start: int, context_length: int, stride: int | None = None
) -> list[tuple[int, int, int]]:
    """Windows that predict positions ``start .. length-1`` of a sequence once each.

    Returns ``(lo, first, hi)`` triples: the window's input is ``seq[lo:hi-1]``
    (at most ``context_length`` tokens), it predicts ``seq[lo+1:hi]``, and the
    predictions of positions ``first .. hi-1`` are the ones counted. Consecutive
    windows overlap so that every counted position after the first window has at
    least ``context_length - stride`` tokens of context (default stride: half the
    context).
    """
    if start < 1:
        raise ValueError(f"start must be >= 1 (position 0 has no context), got {start}")
    stride = stride or max(1, context_length // 2)
    windows: list[tuple[int, int, int]] = []
    first = start
    while first < length:
        reach = (
            max(first + stride, context_length + 1) if not windows else first + stride
        )
        hi = min(length, reach)
        lo = max(0, hi - 1 - context_length)
        windows.append((lo, first, hi))
        first = hi
    return windows


def score_sequences(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    starts: Sequence[int],
    context_length: int,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log p(token | everything before it) over positions ``starts[i]..`` of
    each ``sequences[i]``, for a causal LM ``model(ids) -> logits``.

    Long sequences are cut into overlapping windows (:func:`sliding_windows`), the
    windows of all sequences are sorted by length and run in batches of
    ``batch_size`` (right-padded; a causal model never looks at the padding). The
    device is picked automatically (CUDA, MPS, else CPU) unless given; on CUDA the
    forward pass runs under bf16 autocast (fp16 on older GPUs), and the log-softmax
    in float32. The model is moved to the device and put in eval mode.

    Returns ``(logprob, count)``: two arrays of shape (n_sequences,), the summed
    log-probability (nats, float64) and the number of predicted tokens.
    """
    if len(sequences) != len(starts):
        raise ValueError(
            f"sequences and starts must have the same length: got {len(sequences)} "
            f"and {len(starts)}"
        )
    device = get_device(device)
    model = model.to(device).eval()
    dtype = autocast_dtype(device)
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    )
    jobs = [
        (i, lo, first, hi)
        for i, (seq, start) in enumerate(zip(sequences, starts, strict=True))
        for lo, first, hi in sliding_windows(len(seq), start, context_length)
    ]
    jobs.sort(key=lambda job: job[3] - job[1])
    logprob = np.zeros(len(sequences))
    count = np.zeros(len(sequences), dtype=np.int64)
    with torch.no_grad():
        for b in range(0, len(jobs), batch_size):
            batch = jobs[b : b + batch_size]
            width = max(hi - 1 - lo for _, lo, _, hi in batch)
            ids = torch.zeros(len(batch), width + 1, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.bool)
            for row, (i, lo, first, hi) in enumerate(batch):
                ids[row, : hi - lo] = torch.as_tensor(sequences[i][lo:hi])
                mask[row, first - lo - 1 : hi - lo - 1] = True
            ids, mask = ids.to(device), mask.to(device)
            with autocast:
                logits = model(ids[:, :-1])  # (batch, width, vocab_size)
            sums = target_log_probs(logits, ids[:, 1:], mask)  # (batch,)
            sums = sums.double().cpu().numpy()
            for row, (i, _, _, _) in enumerate(batch):
                logprob[i] += sums[row]
            count_rows = mask.sum(dim=1).cpu().numpy()
            for row, (i, _, _, _) in enumerate(batch):
                count[i] += count_rows[row]
    return logprob, count
