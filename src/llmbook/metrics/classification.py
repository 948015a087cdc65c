"""Classification metrics from scratch: accuracy, precision, recall, F1, confusion
matrix (Chapter 8). They equal scikit-learn's with ``zero_division=0``.

For each class c, with tp, fp and fn counted over the examples,

* precision_c = tp / (tp + fp): of the examples predicted c, the fraction that are c;
* recall_c = tp / (tp + fn): of the examples that are c, the fraction found;
* F1_c = 2 tp / (2 tp + fp + fn), the harmonic mean of the two.

A ratio 0/0 (a class never predicted has no precision) is set to ``zero_division``
(0 by default, as scikit-learn does after its warning). **Macro** averages the
per-class numbers, so every class weighs the same however rare; **micro** pools the
counts of all classes first, and for single-label classification micro precision =
micro recall = micro F1 = accuracy. Labels are the sorted union of the true and
predicted labels unless ``labels`` is given.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "f1_score",
]

Labels = Sequence[Hashable] | np.ndarray


def _check(y_true: Labels, y_pred: Labels) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must have the same length: got {len(y_true)} and "
            f"{len(y_pred)}"
        )
    if len(y_true) == 0:
        raise ValueError("y_true and y_pred are empty: nothing to score")


def _labels(y_true: Labels, y_pred: Labels, labels: Labels | None) -> list:
    if labels is not None:
        return list(labels)
    return sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Fraction of positions where the prediction equals the truth."""
    _check(y_true, y_pred)
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def confusion_matrix(
    y_true: Labels, y_pred: Labels, labels: Labels | None = None
) -> np.ndarray:
    """Counts ``C[i, j]`` of examples with true label ``labels[i]`` predicted as
    ``labels[j]``; shape (n_labels, n_labels), int64. Rows are the truth."""
    _check(y_true, y_pred)
    labels = _labels(y_true, y_pred, labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(
        np.asarray(y_true).tolist(), np.asarray(y_pred).tolist(), strict=True
    ):
        if t in index and p in index:  # pairs outside `labels` are not counted
            matrix[index[t], index[p]] += 1
    return matrix


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(
    y_true: Labels,
    y_pred: Labels,
    average: str | None = "macro",
    labels: Labels | None = None,
    zero_division: float = 0.0,
) -> tuple:
    """Precision, recall and F1.

    Args:
        average: ``"macro"`` (unweighted mean over labels), ``"micro"`` (from pooled
            counts) or ``None`` (per label: three arrays of shape (n_labels,)).
        labels: the classes to score, in order (default: every label seen).
        zero_division: the value of a 0/0 ratio.

    Returns:
        ``(precision, recall, f1)``: floats, or arrays when ``average`` is None.
    """
    if average not in ("macro", "micro", None):
        raise ValueError(f"average must be 'macro', 'micro' or None, got {average!r}")
    labels = _labels(y_true, y_pred, labels)
    tp = np.diag(confusion_matrix(y_true, y_pred, labels)).astype(float)
    # tp + fp and tp + fn per label, counting every example (also those whose
    # other label is outside `labels`)
    y_true, y_pred = np.asarray(y_true).tolist(), np.asarray(y_pred).tolist()
    predicted = np.array([y_pred.count(c) for c in labels], dtype=float)
    actual = np.array([y_true.count(c) for c in labels], dtype=float)
    if average == "micro":
        tp, predicted, actual = (
            tp.sum(keepdims=True),
            predicted.sum(keepdims=True),
            actual.sum(keepdims=True),
        )
    precision = _ratio(tp, predicted, zero_division)
    recall = _ratio(tp, actual, zero_division)
    f1 = _ratio(2 * tp, predicted + actual, zero_division)  # 2tp / (2tp + fp + fn)
    if average is None:
        return precision, recall, f1
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def f1_score(
    y_true: Labels,
    y_pred: Labels,
    average: str | None = "macro",
    labels: Labels | None = None,
    zero_division: float = 0.0,
) -> float | np.ndarray:
    """F1 (see :func:`precision_recall_f1`); macro-F1 by default."""
    return precision_recall_f1(y_true, y_pred, average, labels, zero_division)[2]
