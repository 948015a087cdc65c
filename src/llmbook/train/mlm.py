"""The course's masked-LM encoder around its training (Chapters 5-7).

``mlm_tokenizer`` (the course tokenizer plus ``<|mask|>``), ``evaluate_mlm``
(masked-token accuracy, top-5 accuracy and perplexity on held-out text under one
fixed masking, beside the unigram baseline's accuracy) and ``most_frequent_tokens``.
Filling in masks is :func:`llmbook.decoding.fill_mask` (Chapter 6).

Training is the causal LM's loop (:func:`llmbook.train.loop.train`) with
``TrainConfig(objective="masked")``: BERT's loss
(:func:`llmbook.train.objectives.mlm_loss`) in place of next-token prediction and
the same window sampler, optimiser, schedule, clipping, weight averaging,
checkpoints and mixed precision. ``PRESETS["mlm"]`` is the shipped ``course-mlm``'s
recipe; ``python -m llmbook.pretrain_mlm`` trains it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor

from llmbook.data.tokenization import MASK_TOKEN, course_tokenizer
from llmbook.model.bert import MaskedLM

__all__ = [
    "mlm_tokenizer",
    "most_frequent_tokens",
    "evaluate_mlm",
]


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
