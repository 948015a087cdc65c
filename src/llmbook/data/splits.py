"""Document-level train/validation/test splits, and THE course split (Chapter 2)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmbook.data.cleaning import (
    clean_code,
    clean_text,
    deduplicate,
    remove_near_duplicates,
)
from llmbook.data.corpus import load_corpus, stored_splits

__all__ = ["Splits", "split_documents", "compute_course_splits", "course_splits"]


@dataclass
class Splits:
    """Train/validation/test lists of documents."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        """Number of documents per split."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _unit_hash(doc: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) determined by (seed, document text)."""
    digest = hashlib.blake2b(f"{seed}\x00{doc}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_documents(
    docs: Iterable[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Splits:
    """Assign whole documents to train/val/test by a stable hash of their text.

    Each document goes to the split whose cumulative-fraction interval contains
    ``blake2b(seed, text)`` mapped to [0, 1). So the assignment of a document depends
    on nothing but its own text and ``seed``: adding or removing other documents never
    moves it, identical texts always land in the same split (no leakage by
    duplication), and input order is kept within each split. Split sizes are
    therefore only approximately proportional to ``fractions``.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0:
        raise ValueError(f"fractions must be 3 non-negative numbers, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {sum(fractions)}")
    train_end, val_end = fractions[0], fractions[0] + fractions[1]
    splits = Splits()
    for doc in docs:
        u = _unit_hash(doc, seed)
        target = splits.train if u < train_end else splits.val if u < val_end else None
        (target if target is not None else splits.test).append(doc)
    return splits


def _cleaned(corpus: str) -> list[str]:
    """The documents of ``corpus``, prose through clean_text, code through clean_code."""
    if corpus == "python":
        return [
            doc for part in ("docstrings", "topics", "source") for doc in _cleaned(part)
        ]
    clean = clean_code if corpus == "source" else clean_text
    return [clean(d) for d in load_corpus(corpus)]


@functools.cache
def _computed(corpus: str) -> tuple[tuple[str, ...], ...]:
    docs = _cleaned(corpus)
    docs = deduplicate(docs)
    docs = remove_near_duplicates(docs)
    s = split_documents(docs)
    return tuple(s.train), tuple(s.val), tuple(s.test)


def compute_course_splits(corpus: str = "python") -> Splits:
    """Run the course's split pipeline on this interpreter (see :func:`course_splits`).

    On CPython 3.11.7, where the snapshot was made, this reproduces the stored split
    of the ``"python"`` corpus exactly (a test checks it); other versions may clean a
    few characters differently (their Unicode tables differ).
    """
    train, val, test = _computed(corpus)
    return Splits(list(train), list(val), list(test))


def _course_splits(corpus: str) -> tuple[tuple[str, ...], ...]:
    stored = stored_splits(corpus)
    if stored is not None:
        return stored["train"], stored["val"], stored["test"]
    return _computed(corpus)


def course_splits(corpus: str = "python") -> Splits:
    """THE fixed course split of a built-in corpus (cached in-process).

    ``load_corpus(corpus)`` -> :func:`clean_text` (prose) or :func:`clean_code`
    (the ``"source"`` documents) -> :func:`deduplicate` ->
    :func:`remove_near_duplicates` (threshold 0.8, 64 permutations, character
    5-grams) -> :func:`split_documents` with fractions (0.8, 0.1, 0.1), seed 0.
    For the course corpus ``"python"`` the result of that pipeline is stored in the
    snapshot (made on CPython 3.11.7) and read from there, so every Python version
    gets the same documents; :func:`compute_course_splits` reruns the pipeline.
    Returns fresh lists on every call, so callers may modify them.
    """
    train, val, test = _course_splits(corpus)
    return Splits(list(train), list(val), list(test))
