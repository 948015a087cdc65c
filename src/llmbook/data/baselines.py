"""Recorded baselines that every later model of the course must beat.

Chapter 1 measures an n-gram language model on the course data. Its validation
perplexity is recorded here, with everything needed to reproduce it, so that later
chapters can print "n-gram baseline: ..." next to their own number without retraining.
``tests/unit/data/test_ngram.py`` recomputes it with
:func:`ngram_baseline_perplexity`, so the record cannot go stale silently.

The unit is the course tokenizer's token: the perplexity is per BPE token of
``course_tokenizer(2048)``, counting one end-of-document prediction per document
(the ``</s>`` of :mod:`llmbook.data.ngram`, the ``<|endoftext|>`` of
:func:`llmbook.data.batching.pack_blocks`). A model that uses another tokenizer has a
different unit and cannot be compared with this number directly.
"""

from __future__ import annotations

import functools
from typing import Any

from llmbook.data.ngram import NGramLM
from llmbook.data.splits import course_splits
from llmbook.data.tokenization import course_tokenizer, encode_docs

__all__ = ["NGRAM_BASELINE", "ngram_baseline_model", "ngram_baseline_perplexity"]

#: Interpolated Kneser-Ney 5-gram on BPE tokens of the course corpus (the snapshot
#: of everything Python ships), trained on the train split, scored on the validation
#: split, with the unigram level mixed with the uniform distribution over the
#: tokenizer's 2,048 tokens so that tokens never seen in training keep a finite cost
#: (measured by Chapter 1).
NGRAM_BASELINE: dict[str, Any] = {
    "corpus": "python",
    "train_split": "train",
    "split": "val",
    "tokenizer": "course_tokenizer(2048)",
    "order": 5,
    "smoothing": "kneser_ney",
    "discount": 0.75,
    "uniform": 2048,
    "perplexity": 42.58146156449373,
}


def ngram_baseline_model(config: dict[str, Any] | None = None):
    """Fit the baseline n-gram model of ``config`` (default :data:`NGRAM_BASELINE`).

    Returns ``(model, tokenizer)``: an :class:`llmbook.data.ngram.NGramLM` fitted on the
    token ids of the training split, and the tokenizer that made them.
    """
    cfg = dict(NGRAM_BASELINE if config is None else config)
    if cfg["tokenizer"] != "course_tokenizer(2048)":
        raise ValueError(
            f"only tokenizer 'course_tokenizer(2048)' is supported, got {cfg['tokenizer']!r}"
        )
    tokenizer = course_tokenizer(2048, corpus=cfg["corpus"])
    splits = course_splits(cfg["corpus"])
    train = encode_docs(tokenizer, getattr(splits, cfg["train_split"]))
    model = NGramLM(
        cfg["order"],
        cfg["smoothing"],
        discount=cfg["discount"],
        uniform=cfg.get("uniform"),
    )
    return model.fit(train), tokenizer


def ngram_baseline_perplexity(config: dict[str, Any] | None = None) -> float:
    """Recompute the baseline perplexity (per BPE token) of ``config``.

    With the default config this equals ``NGRAM_BASELINE["perplexity"]``. Takes a few
    seconds (counting about 135,000 training tokens) the first time; the result is
    cached in-process for each config.
    """
    cfg = dict(NGRAM_BASELINE if config is None else config)
    return _baseline_perplexity(tuple(sorted(cfg.items())))


@functools.cache
def _baseline_perplexity(config: tuple[tuple[str, Any], ...]) -> float:
    cfg = dict(config)
    model, tokenizer = ngram_baseline_model(cfg)
    docs = getattr(course_splits(cfg["corpus"]), cfg["split"])
    return model.perplexity(encode_docs(tokenizer, docs))
