"""Pretraining objectives (Chapter 5, Section 1).

What a language model is trained to predict, and the loss that measures it. Every
function here is the package copy of code that Chapter 5 writes inline;
``tests/chapters/test_chapter05_objectives.py`` checks the two agree, and
``tests/unit/train/test_objectives.py`` checks this file against ``torch.nn.functional``,
Hugging Face's ``GPT2LMHeadModel`` (its built-in loss) and
``DataCollatorForLanguageModeling``.

Contents:

* causal (autoregressive) language modelling: ``causal_lm_loss``,
  ``sequence_log_prob`` and ``perplexity``;
* BERT's masked language modelling: ``mask_tokens`` (15 % of positions, of which
  80 % become ``[MASK]``, 10 % a random token, 10 % stay) and ``mlm_loss`` (the
  cross-entropy of a :class:`~llmbook.model.MaskedLM` at those positions);
* BERT's next-sentence prediction: ``split_sentences`` and ``next_sentence_pairs``;
* T5's span corruption: ``span_corruption`` and its inverse
  ``reconstruct_from_spans``.

Conventions: token ids are ``torch.long``; a label of ``IGNORE_INDEX`` (-100, the
value PyTorch and Hugging Face use) marks a position that does not count in the loss.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.model.scoring import target_log_probs

if TYPE_CHECKING:  # pragma: no cover
    from llmbook.model.bert import MaskedLM

__all__ = [
    "IGNORE_INDEX",
    "causal_lm_loss",
    "sequence_log_prob",
    "perplexity",
    "mask_tokens",
    "mlm_loss",
    "split_sentences",
    "next_sentence_pairs",
    "span_corruption",
    "reconstruct_from_spans",
]

IGNORE_INDEX = -100


# --- causal language modelling ---------------------------------------------------


def _token_log_probs(logits: Tensor, targets: Tensor, ignore_index: int) -> Tensor:
    """log p(target_t | context) per position, 0 where ignored. (batch, seq), float32+."""
    mask = targets != ignore_index
    return target_log_probs(logits, targets, mask, reduction="none")


def causal_lm_loss(
    logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Mean negative log-likelihood (cross-entropy, in nats) of the targets.

    ``logits`` (batch, seq, vocab) are the model's scores; ``targets`` (batch, seq)
    the ids it should predict at each position, ALREADY shifted: ``targets[:, t]``
    is the token that follows the input at position ``t`` (a ``BlockDataset``
    yields such pairs; Hugging Face models instead shift ``labels`` inside).
    Positions whose target equals ``ignore_index`` do not count; the mean is over
    the remaining positions of the whole batch, exactly as
    ``F.cross_entropy(logits.flatten(0, 1), targets.flatten())``. Returns a scalar
    (NaN, like PyTorch, when every target is ignored).
    """
    token_lp = _token_log_probs(logits, targets, ignore_index)  # (batch, seq)
    n = (targets != ignore_index).sum()
    return -token_lp.sum() / n


def sequence_log_prob(
    logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """log p(whole target sequence) per sequence, by the chain rule. (batch,), nats.

    log p(x_1..x_T) = sum_t log p(x_t | x_<t): the sum (not the mean) of the
    per-position log-probabilities of ``targets`` (batch, seq) under ``logits``
    (batch, seq, vocab), skipping positions equal to ``ignore_index`` (padding).
    Always <= 0; ``exp`` of it is the probability of the sequence.
    """
    return _token_log_probs(logits, targets, ignore_index).sum(dim=-1)


def perplexity(mean_nll: float | Tensor) -> float:
    """Perplexity = exp(mean negative log-likelihood per token, in nats).

    The cross-entropy ``H = -(1/N) sum_t ln p(x_t | x_<t)`` is measured in nats
    (natural log); divided by ``ln 2`` it is in bits per token. Perplexity
    ``exp(H) = 2 ** (H / ln 2)`` is the same number in either unit: the size of a
    uniform distribution that would be exactly as surprised. A model guessing
    uniformly over ``V`` tokens has ``H = ln V`` and perplexity ``V``; a perfect
    model has ``H = 0`` and perplexity 1.
    """
    value = float(mean_nll)
    if math.isnan(value):
        raise ValueError("mean_nll is NaN (were all targets ignored?)")
    return math.exp(value)


# --- masked language modelling (BERT) ----------------------------------------------


def mask_tokens(
    ids: Tensor,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int] = (),
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption of token ids (any shape, usually (batch, seq)).

    Each position whose id is not in ``special_ids`` is chosen independently with
    probability ``mask_prob``. A chosen position becomes ``mask_id`` with probability
    0.8, a token drawn uniformly from ``[0, vocab_size)`` with probability 0.1, and
    stays unchanged otherwise. Returns ``(inputs, labels)`` with the shape of
    ``ids``: the corrupted ids, and the original id at chosen positions and
    ``IGNORE_INDEX`` (-100) elsewhere, so that the loss counts chosen positions
    only. ``ids`` is not modified.

    The random draws (three Bernoulli fields, then one field of random ids) are made
    in the same order as Hugging Face's ``DataCollatorForLanguageModeling``, so with
    a generator in the same state, ``vocab_size = len(tokenizer)`` and the same
    special ids, the two return identical tensors.
    """
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"ids must be integer token ids, got {ids.dtype}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must lie in [0, {vocab_size}), got {mask_id}")
    shape = ids.shape
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    prob = torch.full(shape, mask_prob).masked_fill(special, 0.0)
    chosen = torch.bernoulli(prob, generator=generator).bool()
    labels = torch.where(chosen, ids, IGNORE_INDEX).long()
    inputs = ids.clone().long()
    # 80 % of the chosen: [MASK]
    to_mask = torch.bernoulli(torch.full(shape, 0.8), generator=generator).bool()
    to_mask &= chosen
    inputs[to_mask] = mask_id
    # half of the remaining 20 %: a random token; the other half stay as they were
    to_random = torch.bernoulli(torch.full(shape, 0.5), generator=generator).bool()
    to_random &= chosen & ~to_mask
    random_ids = torch.randint(vocab_size, shape, generator=generator)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def mlm_loss(
    model: MaskedLM,
    ids: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """BERT's masked-LM loss on a batch of clean ids (batch, seq): a scalar, in nats.

    :func:`llmbook.train.objectives.mask_tokens` chooses each non-special position
    with probability ``mask_prob`` and corrupts it (80 % ``mask_id``, 10 % a random
    id from ``[0, vocab_size)``, 10 % unchanged); the model sees the corrupted ids
    and the loss is the mean cross-entropy of the original ids over the chosen
    positions only. Put the padding id in ``special_ids`` so that padding is never
    chosen, and pass ``attention_mask`` (batch, seq) so that it is not attended.
    NaN when no position is chosen (as ``causal_lm_loss`` when all are ignored).
    """
    if vocab_size > model.config.vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} exceeds the model's vocab_size "
            f"{model.config.vocab_size}: random replacements would be out of range"
        )
    inputs, labels = mask_tokens(  # drawn on the CPU, where ``generator`` lives
        ids.cpu(),
        vocab_size=vocab_size,
        mask_id=mask_id,
        special_ids=special_ids,
        mask_prob=mask_prob,
        generator=generator,
    )
    inputs, labels = inputs.to(ids.device), labels.to(ids.device)
    logits = model(inputs, attention_mask)  # (batch, seq, vocab_size)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX
    )


# --- next-sentence prediction (BERT) -------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[`])")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences with a regular expression (no model needed).

    Blank lines end a sentence (paragraphs, list blocks); inside a paragraph line
    breaks become spaces and a sentence ends at ``.``, ``!`` or ``?`` followed by
    whitespace and an upper-case letter, digit, quote or bracket. Good enough for
    docstrings; abbreviations such as "e.g. The" are split wrongly.
    """
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        sentences.extend(s for s in _SENTENCE_END.split(flat) if s)
    return sentences


def next_sentence_pairs(
    docs_sentences: Sequence[Sequence[str]], n_pairs: int, *, seed: int = 0
) -> list[tuple[str, str, bool]]:
    """BERT's next-sentence-prediction examples: ``(sentence_a, sentence_b, is_next)``.

    Each pair takes a random sentence ``a`` that has a successor in its document.
    With probability 1/2 ``b`` is that successor (``is_next=True``); otherwise ``b``
    is a random sentence of a different, random document (``is_next=False``).
    ``docs_sentences`` holds each document's sentences in order (for example
    ``[split_sentences(d) for d in docs]``). Seeded and deterministic.
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    docs = [list(d) for d in docs_sentences]
    firsts = [i for i, d in enumerate(docs) if len(d) >= 2]
    others = [i for i, d in enumerate(docs) if len(d) >= 1]
    if not firsts:
        raise ValueError("need at least one document with two or more sentences")
    if len(others) < 2:
        raise ValueError("need at least two non-empty documents for negative pairs")
    rng = random.Random(seed)
    pairs = []
    for _ in range(n_pairs):
        d = rng.choice(firsts)
        i = rng.randrange(len(docs[d]) - 1)
        if rng.random() < 0.5:
            pairs.append((docs[d][i], docs[d][i + 1], True))
        else:
            e = rng.choice([j for j in others if j != d])
            pairs.append((docs[d][i], rng.choice(docs[e]), False))
    return pairs


# --- span corruption (T5) -----------------------------------------------------------


def _random_segments(n: int, k: int, generator: torch.Generator | None) -> Tensor:
    """Random lengths of k non-empty segments summing to n (uniform composition)."""
    cuts = torch.randperm(n - 1, generator=generator)[: k - 1] + 1
    edges = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([n])])
    return edges.diff()  # (k,)


def _span_counts(length: int, noise_density: float, mean_span_length: float):
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(round(n_noise / mean_span_length), 1)
    n_spans = min(n_spans, n_noise, length - n_noise + 1)
    return n_noise, n_spans


def span_corruption(
    ids: Tensor,
    *,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """T5's span-corruption objective on one sequence of ids (seq,).

    ``round(noise_density * seq)`` tokens (at least 1, at most seq - 1), grouped into
    ``round(n_noise / mean_span_length)`` spans (at least 1), are dropped. The
    sequence alternates kept and dropped stretches; the lengths of both kinds are
    random, and the first and last kept stretches may be empty. (T5's reference code
    always starts with a kept stretch and ends with a dropped span; here a span may
    sit anywhere.) In ``inputs`` each dropped span is replaced by
    one sentinel (``sentinel_ids[0]``, ``[1]``, ... in order); ``targets`` lists each
    sentinel followed by the span it replaced, and ends with the next unused
    sentinel. Example: ``a b c d e f`` with spans ``b c`` and ``e`` gives inputs
    ``a <0> d <1> f`` and targets ``<0> b c <1> e <2>``. Returns 1-D long tensors.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be one sequence (seq,), got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"ids must be integer token ids, got {ids.dtype}")
    length = ids.shape[0]
    if length < 2:
        raise ValueError(f"need at least 2 tokens to corrupt a span, got {length}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must lie in (0, 1), got {noise_density}")
    if mean_span_length < 1:
        raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
    sentinels = torch.tensor(list(sentinel_ids), dtype=torch.long)
    if torch.isin(ids.long(), sentinels).any():
        raise ValueError("ids already contain a sentinel id; sentinels must be unused")
    n_noise, n_spans = _span_counts(length, noise_density, mean_span_length)
    if len(sentinels) < n_spans + 1:
        raise ValueError(
            f"{n_spans} spans need {n_spans + 1} sentinel ids (one per span and a "
            f"final one), got {len(sentinels)}"
        )
    noise_lens = _random_segments(n_noise, n_spans, generator)  # all >= 1
    # n_spans + 1 kept stretches; the inner ones >= 1, the first and last >= 0
    keep_lens = _random_segments(length - n_noise + 2, n_spans + 1, generator)
    keep_lens[0] -= 1
    keep_lens[-1] -= 1
    inputs, targets, start = [], [], 0
    for s in range(n_spans):
        keep, noise = int(keep_lens[s]), int(noise_lens[s])
        inputs += [ids[start : start + keep], sentinels[s : s + 1]]
        targets += [sentinels[s : s + 1], ids[start + keep : start + keep + noise]]
        start += keep + noise
    inputs.append(ids[start:])
    targets.append(sentinels[n_spans : n_spans + 1])
    return torch.cat(inputs).long(), torch.cat(targets).long()


def reconstruct_from_spans(
    inputs: Tensor, targets: Tensor, sentinel_ids: Sequence[int]
) -> Tensor:
    """Undo ``span_corruption``: put each target span back in place of its sentinel.

    ``inputs`` and ``targets`` are 1-D; sentinels must appear in order
    (``sentinel_ids[0]``, ``[1]``, ...) in both. Returns the original ids (seq,).
    """
    sentinel_pos = {int(s): i for i, s in enumerate(sentinel_ids)}
    spans: list[list[int]] = []
    for tok in targets.tolist():
        if tok in sentinel_pos:
            if sentinel_pos[tok] != len(spans):
                raise ValueError(f"targets: sentinel {tok} out of order")
            spans.append([])
        elif not spans:
            raise ValueError("targets must start with a sentinel")
        else:
            spans[-1].append(tok)
    out: list[int] = []
    n_seen = 0
    for tok in inputs.tolist():
        if tok in sentinel_pos:
            if sentinel_pos[tok] != n_seen or n_seen >= len(spans):
                raise ValueError(f"inputs: sentinel {tok} out of order or missing")
            out += spans[n_seen]
            n_seen += 1
        else:
            out.append(tok)
    return torch.tensor(out, dtype=torch.long)
