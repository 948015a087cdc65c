"""How sure is a score? Bootstrap intervals, paired tests, agreement, sample sizes
(Chapter 8).

An evaluation set is a sample: a second set of the same size drawn from the same
source would give a different accuracy. These functions say by how much.

* :func:`bootstrap_ci`: resample the examples with replacement many times and take
  the middle 95% of the recomputed scores (the percentile bootstrap).
* :func:`paired_bootstrap`: two systems scored on the *same* examples; resample the
  examples and count how often A's advantage disappears (Koehn, 2004).
* :func:`paired_t_interval`: a few paired runs (training seeds, not test examples):
  the mean difference and Student's t interval, which accounts for how little a
  standard deviation of three or five values is known.
* :func:`permutation_test`: under "A and B are interchangeable", swapping A's and
  B's score on any example is as likely as not; the p-value is the fraction of such
  swaps whose mean difference is at least as large as the observed one (exact for
  up to 16 examples, Monte Carlo above).
* :func:`cohen_kappa`: agreement of two annotators beyond what chance gives.
* :func:`examples_needed`: how many examples a difference between two accuracies
  needs before a test at level ``alpha`` finds it with probability ``power``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "bootstrap_ci",
    "PairedResult",
    "paired_bootstrap",
    "paired_t_interval",
    "permutation_test",
    "cohen_kappa",
    "examples_needed",
]


def _resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: a percentile bootstrap confidence interval.

    Args:
        values: per-example scores, shape (n,), or per-example statistics, shape
            (n, d) (e.g. BLEU's counts, which a corpus statistic sums).
        statistic: maps a resampled array (rows of ``values``) to a number; the
            mean by default (then all resamples are computed at once).
        n_resamples: number of bootstrap samples.
        confidence: the interval's nominal coverage, in (0, 1).
    """
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    index = _resample_indices(len(values), n_resamples, seed)
    if statistic is None:
        estimate = float(values.mean())
        samples = values[index].mean(axis=1)
    else:
        estimate = float(statistic(values))
        samples = np.array([statistic(values[i]) for i in index])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return estimate, float(low), float(high)


@dataclass
class PairedResult:
    """Mean difference A - B, its bootstrap interval, and a p-value."""

    difference: float
    low: float
    high: float
    p_value: float


def _paired(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            "paired scores must be two 1-D arrays of the same length (one score per "
            f"example for each system): got shapes {a.shape} and {b.shape}"
        )
    if len(a) == 0:
        raise ValueError("paired scores are empty")
    return a - b


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Is A better than B on these examples? Paired bootstrap of the mean difference.

    The p-value (one-sided) is the fraction of resamples in which A's mean is not
    above B's: small means A's advantage survives resampling the test set.
    """
    diff = _paired(scores_a, scores_b)
    estimate, low, high = bootstrap_ci(diff, None, n_resamples, confidence, seed)
    samples = diff[_resample_indices(len(diff), n_resamples, seed)].mean(axis=1)
    return PairedResult(estimate, low, high, float(np.mean(samples <= 0)))


def paired_t_interval(
    scores_a: Sequence[float], scores_b: Sequence[float], confidence: float = 0.95
) -> PairedResult:
    """Mean difference A - B over paired runs, its Student's t interval and the
    two-sided p-value of "no difference" (the paired t-test).

    For a handful of pairs (seeds) the bootstrap's interval is too narrow: it
    resamples from three values as if they were the population. The t interval
    widens by the t quantile with n - 1 degrees of freedom instead (4.30 for three
    pairs at 95%, 2.78 for five, against 1.96 for many).
    """
    from scipy.stats import t as student_t

    diff = _paired(scores_a, scores_b)
    n = len(diff)
    if n < 2:
        raise ValueError(f"a t interval needs at least two pairs, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(diff.mean())
    se = float(diff.std(ddof=1)) / math.sqrt(n)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * se
    if se == 0:
        p_value = 1.0 if mean == 0 else 0.0
    else:
        p_value = float(2 * student_t.sf(abs(mean) / se, n - 1))
    return PairedResult(mean, mean - half, mean + half, p_value)


def permutation_test(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(A - B) = 0: p-value.

    Exact (all 2^n sign patterns) for n <= 16 examples; otherwise ``n_resamples``
    random patterns and the conservative estimate (count + 1) / (n_resamples + 1).
    """
    diff = _paired(scores_a, scores_b)
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, observed)  # equal means must count as "as large"
    n = len(diff)
    if n <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ diff / n)
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_resamples, n))
    hits = int(np.sum(np.abs(signs @ diff / n) >= observed - tolerance))
    return (hits + 1) / (n_resamples + 1)


def cohen_kappa(
    rater_a: Sequence[Hashable],
    rater_b: Sequence[Hashable],
    weights: str | None = None,
) -> float:
    """Cohen's kappa of two annotators' labels: (p_o - p_e) / (1 - p_e).

    p_o is how often they agree; p_e how often they would agree by chance if each
    labelled at random with their own label frequencies. 1 = perfect agreement,
    0 = chance level, negative = worse than chance. ``weights="linear"`` or
    ``"quadratic"`` gives partial credit to near-misses of ordered labels (ratings
    1-5). Equals ``sklearn.metrics.cohen_kappa_score``; NaN when p_e = 1.
    """
    from llmbook.metrics.classification import confusion_matrix

    observed = confusion_matrix(rater_a, rater_b).astype(float)
    k = len(observed)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)  # disagreement costs 1
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(float)
    else:
        raise ValueError(
            f"weights must be None, 'linear' or 'quadratic', got {weights!r}"
        )
    denominator = (w * expected).sum()
    if denominator == 0:
        return math.nan
    return float(1 - (w * observed).sum() / denominator)


def examples_needed(
    accuracy_a: float, accuracy_b: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Examples per system for a two-sided test at level ``alpha`` to detect the
    difference between two accuracies with probability ``power``.

    Normal approximation for two independent proportions:
    n = (z_{1-alpha/2} sqrt(2 p q) + z_{power} sqrt(p_a q_a + p_b q_b))^2 / (p_a - p_b)^2
    with p the mean of the two. Paired evaluation on one shared test set usually
    needs fewer (only the examples the systems disagree on carry information).
    """
    for name, p in (("accuracy_a", accuracy_a), ("accuracy_b", accuracy_b)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if accuracy_a == accuracy_b:
        raise ValueError(
            "the two accuracies are equal: no sample size detects a zero gap"
        )
    z_alpha = NormalDist().inv_cdf(1 - alpha / 2)
    z_power = NormalDist().inv_cdf(power)
    p = (accuracy_a + accuracy_b) / 2
    spread = z_alpha * math.sqrt(2 * p * (1 - p)) + z_power * math.sqrt(
        accuracy_a * (1 - accuracy_a) + accuracy_b * (1 - accuracy_b)
    )
    return math.ceil(spread**2 / (accuracy_a - accuracy_b) ** 2)
