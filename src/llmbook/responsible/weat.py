"""The Word Embedding Association Test (WEAT) of Caliskan et al. (2017) (Chapter 13).

Two sets of *target* words X and Y (flowers, insects) and two sets of *attribute*
words A and B (pleasant, unpleasant), all embedded. For a word w::

    s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)

The test statistic is ``S = sum_x s(x) - sum_y s(y)``; the effect size is
``d = (mean_x s(x) - mean_y s(y)) / std_{w in X u Y} s(w)`` (a standardised
difference, sample standard deviation with ``ddof=1``); the one-sided p-value is the
share of equal-size re-partitions (X_i, Y_i) of X u Y whose statistic is at least the
observed one. With few words every partition is enumerated (an exact test); otherwise
a seeded random sample of partitions is drawn and ``p = (1 + #{S_i >= S}) / (1 + n)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WEATResult",
    "association",
    "weat_statistic",
    "weat_effect_size",
    "weat_test",
]


def _as_matrix(name: str, x) -> np.ndarray:
    try:
        arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 2-d array of embeddings: {err}") from err
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n_words >= 1, dim), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    norms = np.linalg.norm(arr, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row: its cosine is undefined")
    return arr / norms[:, None]


def _check(X, Y, A, B) -> tuple[np.ndarray, ...]:
    mats = [_as_matrix(n, m) for n, m in zip("XYAB", (X, Y, A, B), strict=True)]
    dims = {m.shape[1] for m in mats}
    if len(dims) != 1:
        raise ValueError(f"X, Y, A, B must share the embedding dim, got {sorted(dims)}")
    if mats[0].shape[0] != mats[1].shape[0]:
        raise ValueError(
            f"X and Y must have the same number of words for the partition test, got "
            f"{mats[0].shape[0]} and {mats[1].shape[0]}"
        )
    if mats[0].shape[0] < 2:
        raise ValueError(
            "X and Y need at least 2 words each (the effect size needs a std)"
        )
    return tuple(mats)


def association(W, A, B) -> np.ndarray:
    """``s(w, A, B)`` for every row ``w`` of ``W`` (n, dim): mean cosine to ``A``
    minus mean cosine to ``B``. Returns shape (n,)."""
    W, A, B = (_as_matrix(n, m) for n, m in zip("WAB", (W, A, B), strict=True))
    if not W.shape[1] == A.shape[1] == B.shape[1]:
        raise ValueError("W, A and B must share the embedding dim")
    return (W @ A.T).mean(axis=1) - (W @ B.T).mean(axis=1)


def weat_statistic(X, Y, A, B) -> float:
    """``S(X, Y, A, B) = sum_x s(x, A, B) - sum_y s(y, A, B)``."""
    X, Y, A, B = _check(X, Y, A, B)
    return float(association(X, A, B).sum() - association(Y, A, B).sum())


def weat_effect_size(X, Y, A, B) -> float:
    """Caliskan et al.'s effect size d (a Cohen's-d-like number, in [-2, 2])."""
    X, Y, A, B = _check(X, Y, A, B)
    sx, sy = association(X, A, B), association(Y, A, B)
    return float((sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1))


@dataclass(frozen=True)
class WEATResult:
    """Effect size d, statistic S, one-sided p-value, and how p was obtained."""

    effect_size: float
    statistic: float
    p_value: float
    n_partitions: int
    exact: bool


def weat_test(
    X, Y, A, B, n_permutations: int = 10_000, seed: int = 0, exact: bool | None = None
) -> WEATResult:
    """Effect size and one-sided permutation p-value (is X more associated with A
    than Y is?).

    Args:
        X, Y: target embeddings, (n, dim) each (same n); A, B: attribute embeddings.
        n_permutations: random partitions to draw when not exact.
        seed: seeds the random partitions.
        exact: enumerate all C(2n, n) partitions; None does so when there are at most
            ``n_permutations`` of them.
    """
    X, Y, A, B = _check(X, Y, A, B)
    if not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(
            f"n_permutations must be a positive int, got {n_permutations!r}"
        )
    s = np.concatenate([association(X, A, B), association(Y, A, B)])
    n, total = len(X), s.sum()
    observed = 2 * s[:n].sum() - total  # = sum over X - sum over Y
    n_all = math.comb(2 * n, n)
    if exact is None:
        exact = n_all <= n_permutations
    tol = 1e-12 * max(1.0, float(np.abs(s).sum()))  # float ties count as ties
    if exact:
        if n_all > 5_000_000:
            raise ValueError(
                f"{n_all} partitions are too many to enumerate; use exact=False"
            )
        idx = np.array(list(itertools.combinations(range(2 * n), n)))
        stats = 2 * s[idx].sum(axis=1) - total
        p = float((stats >= observed - tol).mean())
        count = n_all
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_permutations, 2 * n)), axis=1)[:, :n]
        stats = 2 * s[perms].sum(axis=1) - total
        p = float((1 + (stats >= observed - tol).sum()) / (1 + n_permutations))
        count = n_permutations
    d = float((s[:n].mean() - s[n:].mean()) / s.std(ddof=1))
    return WEATResult(d, float(observed), p, count, bool(exact))
