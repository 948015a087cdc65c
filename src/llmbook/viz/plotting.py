"""Heatmaps of attention weights (Chapter 3 onwards).

Plain matplotlib, no styling library. Both functions accept a ``torch.Tensor`` (any
device, with or without grad) or anything ``numpy.asarray`` understands.

Row i of a weight matrix is query i; column j is key j. So a heatmap is read row by
row: "where does this token look?".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["to_numpy", "plot_attention", "plot_heads"]


def to_numpy(weights: Any) -> np.ndarray:
    """A float numpy copy of ``weights`` (tensor on any device, array, or nested list)."""
    if hasattr(weights, "detach"):  # a torch.Tensor; avoid importing torch here
        weights = weights.detach().to("cpu")
        if weights.dtype.is_floating_point or weights.dtype.is_complex:
            weights = weights.float()
        weights = weights.numpy()
    return np.asarray(weights, dtype=float)


def _check_labels(name: str, tokens: Sequence[str], expected: int, axis: str) -> None:
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a sequence of token strings, not one string")
    if len(tokens) != expected:
        raise ValueError(
            f"{name} has {len(tokens)} tokens but the weights have {expected} {axis}"
        )


def plot_attention(
    weights: Any,
    q_tokens: Sequence[str],
    k_tokens: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    vmin: float | None = 0.0,
    vmax: float | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    annotate: bool = False,
) -> Axes:
    """Draw one attention matrix as a heatmap with token labels.

    weights: (n_q, n_k), row i = how query i spreads its attention over the keys.
    q_tokens: n_q labels for the rows; k_tokens: n_k labels for the columns
    (default: ``q_tokens``, i.e. self-attention).
    ax: draw into this Axes (default: a new figure). ``vmin``/``vmax`` fix the colour
    scale (default 0 to the largest weight). ``annotate`` writes each value in its cell,
    useful for small matrices.
    Returns the Axes; ``ax.images[0].get_array()`` holds exactly the weights drawn.
    """
    data = to_numpy(weights)
    if data.ndim != 2:
        raise ValueError(
            f"plot_attention expects a 2-D (n_q, n_k) matrix, got shape {data.shape}; "
            "select one layer and head first (or use plot_heads for many heads)"
        )
    k_tokens = q_tokens if k_tokens is None else k_tokens
    n_q, n_k = data.shape
    _check_labels("q_tokens", q_tokens, n_q, "rows (queries)")
    _check_labels("k_tokens", k_tokens, n_k, "columns (keys)")

    if ax is None:
        size = (max(3.0, 0.45 * n_k + 1.5), max(2.5, 0.4 * n_q + 1.0))
        _, ax = plt.subplots(figsize=size, layout="constrained")
    image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_k), labels=list(k_tokens), rotation=90)
    ax.set_yticks(range(n_q), labels=list(q_tokens))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title is not None:
        ax.set_title(title)
    if annotate:
        middle = (image.norm.vmin + image.norm.vmax) / 2
        for i in range(n_q):
            for j in range(n_k):
                color = "black" if data[i, j] > middle else "white"
                ax.text(
                    j,
                    i,
                    f"{data[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=8,
                )
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return ax


def plot_heads(
    weights: Any,
    tokens: Sequence[str],
    ncols: int = 4,
    *,
    k_tokens: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    panel_size: float = 2.6,
) -> Figure:
    """One small heatmap per head, on a grid with a shared colour scale.

    weights: (n_heads, n_q, n_k); tokens: the n_q query labels (also the key labels
    unless ``k_tokens`` is given). Panels are titled "head 0", "head 1", ... unless
    ``titles`` is given. Returns the Figure; its first n_heads Axes are the panels, in
    head order.
    """
    data = to_numpy(weights)
    if data.ndim != 3:
        raise ValueError(
            f"plot_heads expects (n_heads, n_q, n_k), got shape {data.shape}"
        )
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    n_heads, n_q, n_k = data.shape
    if n_heads == 0:
        raise ValueError("plot_heads got 0 heads: weights has shape (0, n_q, n_k)")
    k_tokens = tokens if k_tokens is None else k_tokens
    _check_labels("tokens", tokens, n_q, "rows (queries)")
    _check_labels("k_tokens", k_tokens, n_k, "columns (keys)")
    if titles is not None and len(titles) != n_heads:
        raise ValueError(f"got {len(titles)} titles for {n_heads} heads")

    ncols = min(ncols, n_heads)
    nrows = math.ceil(n_heads / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols + 1.0, panel_size * nrows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    vmax = float(data.max()) if data.size else 1.0
    for h, ax in enumerate(axes.flat):
        if h >= n_heads:
            ax.set_axis_off()
            continue
        plot_attention(
            data[h], tokens, k_tokens, ax=ax, vmin=0.0, vmax=vmax, colorbar=False
        )
        ax.set_title(titles[h] if titles is not None else f"head {h}", fontsize=10)
        ax.tick_params(labelsize=7)
        col = h % ncols
        ax.set_xlabel("")
        ax.set_ylabel("")
        if col != 0:
            ax.set_yticklabels([])
        if h + ncols < n_heads:  # another panel below this one
            ax.set_xticklabels([])
    fig.colorbar(axes.flat[0].images[0], ax=axes, shrink=0.6, label="weight")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig
