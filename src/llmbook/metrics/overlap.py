"""chrF and ROUGE from scratch (Chapter 8).

* **chrF** (Popović, 2015) compares *character* n-grams, n = 1..6, whitespace
  removed, and combines precision P and recall R into an F-score that weights recall
  beta = 2 times as much: F_beta = (1 + beta^2) P R / (beta^2 P + R). P and R are
  averaged over the n-gram orders that exist in both texts before the F-score is
  taken. :func:`corpus_chrf` equals ``sacrebleu.corpus_chrf(...).score`` (its
  ``CHRF()`` defaults): statistics are summed over segments, and for a segment with
  several references the reference with the best segment-level F counts.
* **ROUGE** (Lin, 2004) was built for summaries and leans on recall: ROUGE-N counts
  shared word n-grams, ROUGE-L the longest common subsequence. Tokens are lowercase
  runs of ``[a-z0-9]`` (optionally Porter-stemmed when longer than 3 characters),
  as in Google's ``rouge-score`` package, which :func:`rouge` equals.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

from llmbook.metrics.bleu import transpose_references

__all__ = [
    "chrf_stats",
    "chrf_from_stats",
    "corpus_chrf",
    "sentence_chrf",
    "PRF",
    "rouge_tokenize",
    "rouge_n",
    "rouge_l",
    "lcs_length",
    "rouge",
]

# --- chrF --------------------------------------------------------------------------


def _char_ngrams(text: str, order: int) -> list[Counter]:
    chars = "".join(text.split())  # whitespace does not count
    return [
        Counter(chars[i : i + n] for i in range(len(chars) - n + 1))
        for n in range(1, order + 1)
    ]


def chrf_from_stats(stats: Sequence[int], beta: float = 2.0) -> float:
    """chrF (0-100) from ``[hyp, ref, match]`` counts per order, flattened.

    Precision and recall are averaged over the orders where both the hypothesis and
    the reference have n-grams; the F_beta of the two averages is the score.
    """
    precisions, recalls = [], []
    for i in range(0, len(stats), 3):
        n_hyp, n_ref, n_match = stats[i : i + 3]
        if n_hyp > 0 and n_ref > 0:
            precisions.append(n_match / n_hyp)
            recalls.append(n_match / n_ref)
    if not precisions:
        return 0.0
    p = sum(precisions) / len(precisions)
    r = sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    b2 = beta**2
    return 100 * (1 + b2) * p * r / (b2 * p + r)


def chrf_stats(
    hypothesis: str, references: Sequence[str], order: int = 6, beta: float = 2.0
) -> list[int]:
    """Per order n = 1..order: hypothesis n-grams, reference n-grams, matches
    (clipped), flattened; from the reference whose segment chrF is highest (the
    first one on a tie)."""
    if len(references) == 0:
        raise ValueError("each hypothesis needs at least one reference, got none")
    hyp = _char_ngrams(hypothesis, order)
    best, best_score = None, -1.0
    for reference in references:
        stats = []
        for h, r in zip(hyp, _char_ngrams(reference, order), strict=True):
            matched = sum(min(c, r[g]) for g, c in h.items() if g in r)
            # a hypothesis n-gram only counts when the reference has that order
            stats += [sum(h.values()) if r else 0, sum(r.values()), matched]
        score = chrf_from_stats(stats, beta)
        if score > best_score:
            best, best_score = stats, score
    return best


def corpus_chrf(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus chrF (0-100), equal to ``sacrebleu.corpus_chrf(hyps, refs).score``.

    ``references`` has sacrebleu's layout: ``references[j][i]`` is the j-th
    reference of hypothesis i.
    """
    if len(hypotheses) == 0 or len(references) == 0:
        raise ValueError("corpus_chrf needs at least one hypothesis and one reference")
    per_segment = transpose_references(references, len(hypotheses))
    total = [0] * 18
    for hyp, refs in zip(hypotheses, per_segment, strict=True):
        total = [a + b for a, b in zip(total, chrf_stats(hyp, refs), strict=True)]
    return chrf_from_stats(total)


def sentence_chrf(hypothesis: str, references: list[str]) -> float:
    """chrF of one segment (0-100), as ``sacrebleu.sentence_chrf``."""
    return chrf_from_stats(chrf_stats(hypothesis, references))


# --- ROUGE -------------------------------------------------------------------------


class PRF(NamedTuple):
    """Precision, recall and F1 (each in [0, 1])."""

    precision: float
    recall: float
    fmeasure: float


def _prf(overlap: int, n_pred: int, n_target: int) -> PRF:
    p = overlap / max(n_pred, 1)
    r = overlap / max(n_target, 1)
    return PRF(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@cache
def _porter():
    from nltk.stem.porter import PorterStemmer  # the stemmer rouge-score uses

    return PorterStemmer()


def rouge_tokenize(text: str, stem: bool = False) -> list[str]:
    """Lowercase, keep runs of ``[a-z0-9]``; with ``stem``, Porter-stem words of
    more than 3 characters. (Non-ASCII letters are separators, as in rouge-score.)"""
    tokens = _NON_ALNUM.sub(" ", text.lower()).split()
    if stem:
        tokens = [_porter().stem(t) if len(t) > 3 else t for t in tokens]
    return tokens


def rouge_n(target: Sequence[str], prediction: Sequence[str], n: int) -> PRF:
    """ROUGE-N of token lists: clipped n-gram overlap / prediction n-grams
    (precision) and / target n-grams (recall)."""
    t = Counter(tuple(target[i : i + n]) for i in range(len(target) - n + 1))
    p = Counter(tuple(prediction[i : i + n]) for i in range(len(prediction) - n + 1))
    overlap = sum(min(c, p[g]) for g, c in t.items())
    return _prf(overlap, sum(p.values()), sum(t.values()))


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len a *
    len b) time, O(len b) memory)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(target: Sequence[str], prediction: Sequence[str]) -> PRF:
    """ROUGE-L of token lists: LCS / len(prediction) and LCS / len(target)."""
    if not target or not prediction:
        return PRF(0.0, 0.0, 0.0)
    return _prf(lcs_length(target, prediction), len(prediction), len(target))


def rouge(target: str, prediction: str, stem: bool = False) -> dict[str, PRF]:
    """ROUGE-1, ROUGE-2 and ROUGE-L of two texts, keyed ``"rouge1"``, ``"rouge2"``,
    ``"rougeL"``; equal to ``rouge_scorer.RougeScorer([...], use_stemmer=stem)
    .score(target, prediction)``. Note the order: reference first."""
    t, p = rouge_tokenize(target, stem), rouge_tokenize(prediction, stem)
    return {
        "rouge1": rouge_n(t, p, 1),
        "rouge2": rouge_n(t, p, 2),
        "rougeL": rouge_l(t, p),
    }
