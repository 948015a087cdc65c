"""Contamination: how much of an evaluation item already occurs in the training data
(Chapter 8).

A benchmark measures generalisation only if its items were not in the training data.
With web-scale training sets nobody can read everything, so overlap is measured
mechanically: an item counts as contaminated when enough of its word n-grams also
occur in the training text (GPT-3's report used 13-grams; shorter items need
shorter n). Splitting *documents* at random is not enough when the same text appears
in two documents, as Chapter 2's leakage demonstration showed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["words", "ngram_set", "NGramIndex", "overlap_fraction"]

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lowercased word and punctuation tokens (case and spacing do not hide a copy)."""
    return _WORD.findall(text.lower())


def ngram_set(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The distinct n-grams of a token list (empty when it is shorter than n)."""
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class NGramIndex:
    """Every word n-gram of a training corpus, for membership queries.

    Memory grows with the corpus (one hash per distinct n-gram); at the course's
    scale (a few hundred thousand words) that is a few tens of MB.
    """

    def __init__(self, docs: Iterable[str], n: int = 8) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.grams: set[int] = set()
        for doc in docs:
            self.grams.update(hash(g) for g in ngram_set(words(doc), n))

    def overlap(self, text: str) -> float:
        """Fraction of the text's n-grams that occur in the index (0 when the text
        has fewer than n tokens)."""
        grams = ngram_set(words(text), self.n)
        if not grams:
            return 0.0
        return sum(hash(g) in self.grams for g in grams) / len(grams)


def overlap_fraction(texts: Sequence[str], index: NGramIndex) -> list[float]:
    """:meth:`NGramIndex.overlap` of each text."""
    return [index.overlap(t) for t in texts]
