"""Draw the book's conceptual figures (book/figures/*.svg) with matplotlib.

Each figure is built from patches, arrows and text only, in one small house style.
The output is deterministic: a fixed SVG hash salt and no date in the metadata, so
rerunning the script rewrites byte-identical files (tests/book/test_figures.py checks that
the committed SVGs are exactly what this code draws).

    python tools/draw_figures.py            # writes book/figures/*.svg
    python tools/draw_figures.py OUT_DIR    # writes them somewhere else
    python tools/draw_figures.py OUT_DIR --png   # also a PNG twin of each, to look at
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIG_DIR = ROOT / "book" / "figures"

# A small palette, used with the same meaning in every figure.
INK = "#222222"
GREY = "#8a8a8a"
QUERY = "#f4a261"  # queries, the token being processed
KEY = "#8ecae6"  # keys
VALUE = "#90be6d"  # values
NORM = "#e9c46a"  # LayerNorm
BLOCK = "#dfe7fd"  # learned sub-layers (attention, FFN, experts)
FROZEN = "#d9d9d9"  # frozen weights, cached or unused things
ADD = "#ffffff"
ACCENT = "#e76f51"  # cross-attention, dropped tokens
FONT = 10


def _style() -> None:
    plt.rcParams.update(
        {
            "svg.hashsalt": "llmbook",
            "svg.fonttype": "path",
            "font.family": "DejaVu Sans",
            "font.size": FONT,
            "figure.dpi": 100,
        }
    )


def _canvas(width: float, height: float):
    """A figure with data coordinates equal to inches, so shapes keep their aspect."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(
    ax,
    x,
    y,
    w,
    h,
    text="",
    color=BLOCK,
    *,
    size=FONT,
    dashed=False,
    lw=1.0,
    weight="normal",
    text_color=INK,
    round_=0.06,
):
    """A rounded box with (x, y) its lower-left corner and centred text."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle=f"round,pad=0,rounding_size={round_}",
            facecolor=color,
            edgecolor=INK,
            linewidth=lw,
            linestyle="--" if dashed else "-",
        )
    )
    if text:
        ax.text(
            x + w / 2,
            y + h / 2,
            text,
            ha="center",
            va="center",
            fontsize=size,
            color=text_color,
            weight=weight,
        )


def circle_add(ax, x, y, r=0.13, symbol="+"):
    ax.add_patch(
        plt.Circle((x, y), r, facecolor=ADD, edgecolor=INK, linewidth=1.0, zorder=3)
    )
    ax.text(x, y, symbol, ha="center", va="center", fontsize=FONT + 2, zorder=4)


def arrow(
    ax, start, end, *, color=INK, lw=1.1, style="-|>", rad=0.0, dashed=False, shrink=0.0
):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=11,
            color=color,
            linewidth=lw,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=shrink,
            shrinkB=shrink,
            linestyle="--" if dashed else "-",
            zorder=2,
        )
    )


def line(ax, xs, ys, *, color=INK, lw=1.1, dashed=False):
    ax.plot(
        xs,
        ys,
        color=color,
        linewidth=lw,
        linestyle="--" if dashed else "-",
        solid_capstyle="round",
        zorder=1,
    )


def label(
    ax,
    x,
    y,
    text,
    *,
    size=FONT - 1,
    color=INK,
    ha="center",
    va="center",
    style="normal",
    weight="normal",
):
    ax.text(
        x, y, text, ha=ha, va=va, fontsize=size, color=color, style=style, weight=weight
    )


# --------------------------------------------------------------------- figures


def qkv_lookup():
    """Chapter 3's toy memory: one query, four keys, softmax weights, blended value."""
    words = ["cat", "dog", "car", "bus"]
    keys = [(1.0, 0.2), (0.9, 0.3), (0.1, 1.0), (0.0, 0.9)]
    values = [(4.0, 0.0), (4.0, 0.0), (0.0, 4.0), (0.0, 6.0)]
    query = (2.0, 0.0)
    scores = [query[0] * k[0] + query[1] * k[1] for k in keys]
    exps = [math.exp(s) for s in scores]
    weights = [e / sum(exps) for e in exps]
    answer = tuple(
        sum(w * v[j] for w, v in zip(weights, values, strict=True)) for j in range(2)
    )

    fig, ax = _canvas(8.6, 3.9)
    top = 3.15  # y of the first row's centre
    step = 0.7
    rows = [top - i * step for i in range(4)]
    # query
    box(ax, 0.15, 1.55, 1.2, 0.62, f"query q\n({query[0]:g}, {query[1]:g})", QUERY)
    label(ax, 0.75, 1.3, '"animal-like?"', size=FONT - 1, style="italic")
    # column headers
    label(ax, 2.35, 3.7, "keys k (animal, vehicle)", weight="bold")
    label(ax, 4.05, 3.7, "score q·k", weight="bold")
    label(ax, 5.2, 3.7, "weight", weight="bold")
    label(ax, 6.55, 3.7, "values v (legs, wheels)", weight="bold")
    wmax = 1.1  # inches for a weight of 1
    for y, word, k, s, w, v in zip(
        rows, words, keys, scores, weights, values, strict=True
    ):
        box(ax, 1.75, y - 0.24, 1.2, 0.48, f"{word}  ({k[0]:g}, {k[1]:g})", KEY)
        arrow(ax, (1.35, 1.86), (1.75, y), color=GREY, lw=0.9)
        arrow(ax, (2.95, y), (3.55, y), lw=0.9)
        label(ax, 4.05, y, f"{s:.1f}")
        # weight bar
        ax.add_patch(
            FancyBboxPatch(
                (4.65, y - 0.13),
                max(w * wmax, 0.02),
                0.26,
                boxstyle="square,pad=0",
                facecolor=QUERY,
                edgecolor=INK,
                linewidth=0.8,
            )
        )
        label(ax, 4.7 + w * wmax + 0.05, y, f"{w:.2f}", ha="left", size=FONT - 1)
        box(ax, 6.0, y - 0.24, 1.1, 0.48, f"({v[0]:g}, {v[1]:g})", VALUE)
        label(ax, 5.85, y, "×", size=FONT + 1)
        arrow(ax, (7.1, y), (7.6, 1.86), color=GREY, lw=0.9)
    # softmax bracket
    line(ax, [3.62, 3.62], [rows[-1] - 0.2, rows[0] + 0.2], color=GREY, lw=0.8)
    label(
        ax,
        4.62,
        0.52,
        "softmax over the scores:\nweights > 0, sum to 1",
        size=FONT - 1,
        color=INK,
    )
    circle_add(ax, 7.75, 1.86, r=0.15, symbol="Σ")
    box(
        ax,
        7.35,
        0.75,
        0.9,
        0.62,
        f"({answer[0]:.1f},\n {answer[1]:.1f})",
        VALUE,
        lw=1.6,
    )
    arrow(ax, (7.75, 1.7), (7.8, 1.38))
    label(ax, 7.8, 0.6, "answer: weighted\nsum of the values", size=FONT - 1, va="top")
    return fig


def prenorm_block():
    """A pre-LN decoder block (GPT-2): LN -> masked MHA -> add; LN -> FFN -> add."""
    fig, ax = _canvas(4.4, 6.6)
    cx = 1.9  # centre of the main column
    w, h = 2.3, 0.5
    # input and output
    label(ax, cx, 0.2, "x  (one vector per token, from the block below)")
    label(ax, cx, 6.42, "to the next block (or final LayerNorm)")
    # residual stream: a vertical line on the left, sub-layers branch off to the right
    y_in = 0.45
    ln1_y, at_y, add1_y = 1.1, 1.85, 2.8
    ln2_y, ff_y, add2_y = 3.55, 4.3, 5.25
    stream_x = 0.45
    line(ax, [stream_x, stream_x], [y_in, add1_y])
    line(ax, [stream_x, stream_x], [add1_y, add2_y])
    arrow(ax, (stream_x, add2_y), (stream_x, 6.25))
    # sub-layer 1
    bx = 1.0
    arrow(ax, (stream_x, ln1_y - 0.35), (bx + w / 2, ln1_y), rad=0.0)
    box(ax, bx, ln1_y, w, h - 0.1, "LayerNorm", NORM)
    arrow(ax, (bx + w / 2, ln1_y + h - 0.1), (bx + w / 2, at_y))
    box(ax, bx, at_y, w, h + 0.15, "masked multi-head\nself-attention", BLOCK)
    arrow(ax, (bx + w / 2, at_y + h + 0.15), (stream_x + 0.15, add1_y))
    circle_add(ax, stream_x, add1_y)
    # sub-layer 2
    arrow(ax, (stream_x, ln2_y - 0.35), (bx + w / 2, ln2_y))
    box(ax, bx, ln2_y, w, h - 0.1, "LayerNorm", NORM)
    arrow(ax, (bx + w / 2, ln2_y + h - 0.1), (bx + w / 2, ff_y))
    box(
        ax,
        bx,
        ff_y,
        w,
        h + 0.15,
        "feed-forward\nLinear → GELU → Linear",
        BLOCK,
        size=FONT - 1,
    )
    arrow(ax, (bx + w / 2, ff_y + h + 0.15), (stream_x + 0.15, add2_y))
    circle_add(ax, stream_x, add2_y)
    # annotations
    label(
        ax,
        stream_x - 0.1,
        4.0,
        "residual stream",
        ha="center",
        size=FONT - 1,
        color=GREY,
        style="italic",
    )
    ax.texts[-1].set_rotation(90)
    # dashed frame around the block
    box(ax, 0.1, 0.75, 4.2, 5.0, "", "none", dashed=True, lw=0.8)
    label(ax, 4.2, 0.9, "× N blocks", ha="right", size=FONT - 1, color=GREY)
    return fig


def encoder_decoder():
    """Encoder stack, decoder stack, cross-attention from the memory to every layer."""
    fig, ax = _canvas(7.6, 5.6)
    n = 3
    ex, dx, w, h = 0.5, 4.2, 2.6, 0.78
    ys = [1.15 + i * 1.2 for i in range(n)]
    # inputs
    box(ax, ex, 0.3, w, 0.45, "source tokens + positions", FROZEN, size=FONT - 1)
    box(ax, dx, 0.3, w, 0.45, "target so far + positions", FROZEN, size=FONT - 1)
    arrow(ax, (ex + w / 2, 0.75), (ex + w / 2, ys[0]))
    arrow(ax, (dx + w / 2, 0.75), (dx + w / 2, ys[0]))
    for i, y in enumerate(ys):
        box(
            ax,
            ex,
            y,
            w,
            h,
            f"encoder layer {i + 1}\nself-attention → FFN",
            BLOCK,
            size=FONT - 1,
        )
        box(ax, dx, y, w, h, "", BLOCK)
        label(ax, dx + w / 2, y + h - 0.2, f"decoder layer {i + 1}", size=FONT - 1)
        label(
            ax,
            dx + w / 2,
            y + 0.25,
            "masked self-attn → cross-attn → FFN",
            size=FONT - 2,
        )
        if i:
            arrow(ax, (ex + w / 2, ys[i - 1] + h), (ex + w / 2, y))
            arrow(ax, (dx + w / 2, ys[i - 1] + h), (dx + w / 2, y))
    # memory
    my = ys[-1] + h + 0.45
    arrow(ax, (ex + w / 2, ys[-1] + h), (ex + w / 2, my))
    box(ax, ex, my, w, 0.5, "memory: one vector per source token", KEY, size=FONT - 1)
    # cross-attention: from the memory to every decoder layer
    bus_x = 3.55
    line(ax, [ex + w, bus_x], [my + 0.25, my + 0.25], color=ACCENT, lw=1.5)
    line(ax, [bus_x, bus_x], [my + 0.25, ys[0] + 0.25], color=ACCENT, lw=1.5)
    for y in ys:
        arrow(ax, (bus_x, y + 0.25), (dx, y + 0.25), color=ACCENT, lw=1.5)
    label(
        ax,
        bus_x - 0.06,
        ys[0] - 0.35,
        "keys, values\nfor cross-attention",
        size=FONT - 2,
        color=ACCENT,
    )
    # output
    oy = ys[-1] + h + 0.45
    arrow(ax, (dx + w / 2, ys[-1] + h), (dx + w / 2, oy))
    box(ax, dx, oy, w, 0.5, "linear → softmax: next token", QUERY, size=FONT - 1)
    label(ax, ex + w / 2, 5.35, "encoder (reads the whole source)", weight="bold")
    label(ax, dx + w / 2, 5.35, "decoder (writes left to right)", weight="bold")
    return fig


def kv_cache():
    """Step t: the cache holds K, V of tokens 1..t-1; the new token adds its own."""
    fig, ax = _canvas(8.4, 4.0)
    cw, ch = 0.62, 0.42
    x0 = 1.35
    labels_ = ["1", "2", "3", "…", "t−1"]
    ky, vy = 2.35, 1.45
    label(ax, 0.25, ky + ch / 2, "keys K", ha="left", weight="bold")
    label(ax, 0.25, vy + ch / 2, "values V", ha="left", weight="bold")
    for i, lab in enumerate(labels_):
        x = x0 + i * (cw + 0.06)
        box(
            ax,
            x,
            ky,
            cw,
            ch,
            f"k{lab}" if lab != "…" else "…",
            KEY,
            size=FONT - 1,
            round_=0.03,
        )
        box(
            ax,
            x,
            vy,
            cw,
            ch,
            f"v{lab}" if lab != "…" else "…",
            VALUE,
            size=FONT - 1,
            round_=0.03,
        )
    xe = x0 + len(labels_) * (cw + 0.06)
    # the new slot, appended
    box(ax, xe, ky, cw, ch, "k_t", KEY, size=FONT - 1, lw=2.0, round_=0.03)
    box(ax, xe, vy, cw, ch, "v_t", VALUE, size=FONT - 1, lw=2.0, round_=0.03)
    box(
        ax,
        x0 - 0.1,
        vy - 0.15,
        xe - x0 + 0.02,
        ky + ch - vy + 0.3,
        "",
        "none",
        dashed=True,
        lw=0.8,
    )
    label(
        ax,
        (x0 + xe) / 2 - 0.05,
        vy - 0.35,
        "cache: computed at earlier steps, reused, never recomputed",
        size=FONT - 1,
        color=GREY,
    )
    # the new token
    nx, ny = 6.3, 0.35
    box(ax, nx, ny, 1.3, 0.45, "new token t", QUERY)
    box(ax, nx - 0.2, 1.45, 0.5, 0.42, "q_t", QUERY, size=FONT - 1, round_=0.03)
    box(ax, nx + 0.4, 1.45, 0.5, 0.42, "k_t", KEY, size=FONT - 1, round_=0.03)
    box(ax, nx + 1.0, 1.45, 0.5, 0.42, "v_t", VALUE, size=FONT - 1, round_=0.03)
    for dxx in (0.05, 0.65, 1.25):
        arrow(ax, (nx + 0.65, ny + 0.45), (nx + dxx, 1.45), lw=0.9)
    label(
        ax,
        nx - 0.15,
        0.57,
        "three projections\nof one token",
        size=FONT - 2,
        ha="right",
        color=GREY,
    )
    # append arrows
    arrow(ax, (nx + 0.65, 1.87), (xe + cw / 2 + 0.05, ky), rad=0.25, color=ACCENT)
    arrow(ax, (nx + 1.25, 1.87), (xe + cw + 0.02, vy + ch / 2), rad=0.35, color=ACCENT)
    label(ax, 5.7, 2.55, "append", color=ACCENT, size=FONT - 1)
    # attention
    ay = 3.2
    box(ax, 3.2, ay, 3.4, 0.55, "attend: softmax(q_t·K / √d) V", BLOCK)
    arrow(ax, (3.5, ky + ch), (3.9, ay))
    arrow(ax, (nx + 0.05, 1.87), (5.9, ay), rad=0.1)
    arrow(ax, (x0 - 0.1, vy + ch / 2), (3.2, ay + 0.27), rad=-0.55)
    label(ax, 3.6, 3.0, "all K", size=FONT - 1, ha="right")
    label(ax, 1.3, 3.15, "all V", size=FONT - 1, ha="right")
    arrow(ax, (6.6, ay + 0.27), (7.3, ay + 0.27))
    label(ax, 7.35, ay + 0.27, "output of\nposition t", ha="left", size=FONT - 1)
    label(
        ax,
        0.25,
        3.7,
        "one layer, one head, step t",
        ha="left",
        size=FONT - 1,
        color=GREY,
        style="italic",
    )
    return fig


def lora():
    """y = W x + (alpha / r) B A x, with W frozen and A, B trained."""
    fig, ax = _canvas(6.4, 4.1)
    box(ax, 0.3, 0.2, 1.2, 0.5, "x  (d_in)", QUERY)
    # frozen path
    box(ax, 0.15, 1.6, 1.5, 1.1, "W\nd_out × d_in\nfrozen", FROZEN)
    arrow(ax, (0.9, 0.7), (0.9, 1.6))
    # low-rank path
    box(ax, 2.4, 1.1, 1.7, 0.45, "A   r × d_in", BLOCK, size=FONT - 1)
    box(ax, 2.4, 2.15, 1.7, 0.45, "B   d_out × r", BLOCK, size=FONT - 1)
    line(ax, [0.9, 0.9], [0.7, 0.85])
    arrow(ax, (1.5, 0.45), (3.25, 1.1), rad=0.25)
    arrow(ax, (3.25, 1.55), (3.25, 2.15))
    label(ax, 3.35, 1.85, "r numbers", ha="left", size=FONT - 2, color=GREY)
    box(ax, 2.6, 2.95, 1.3, 0.4, "× α / r", NORM, size=FONT - 1)
    arrow(ax, (3.25, 2.6), (3.25, 2.95))
    label(ax, 4.25, 1.32, "random init", ha="left", size=FONT - 2, color=GREY)
    label(
        ax,
        4.25,
        2.37,
        "zero init: starts\nas the base model",
        ha="left",
        size=FONT - 2,
        color=GREY,
    )
    label(
        ax,
        2.2,
        0.2,
        "trained: r·(d_in + d_out) parameters",
        size=FONT - 2,
        color=GREY,
        ha="left",
    )
    # sum
    circle_add(ax, 1.9, 3.6, r=0.15)
    arrow(ax, (0.9, 2.7), (1.77, 3.55), rad=-0.2)
    arrow(ax, (3.0, 3.35), (2.05, 3.58), rad=0.15)
    arrow(ax, (2.05, 3.6), (4.6, 3.6))
    label(ax, 4.65, 3.6, "h = W x + (α/r) B A x", ha="left", size=FONT - 1)
    return fig


def moe_routing():
    """Tokens, a router, top-2 experts with gates, and one dropped token."""
    fig, ax = _canvas(7.5, 5.0)
    tok_y = 0.3
    toks = ["x1", "x2", "x3", "x4"]
    txs = [0.5 + i * 1.15 for i in range(4)]
    for x, t in zip(txs, toks, strict=True):
        box(ax, x, tok_y, 0.8, 0.42, t, ACCENT if t == "x4" else QUERY, size=FONT - 1)
    box(
        ax,
        0.4,
        1.15,
        4.45,
        0.5,
        "router: softmax(W_r x), keep the top k = 2",
        NORM,
        size=FONT - 1,
    )
    for x in txs:
        arrow(ax, (x + 0.4, tok_y + 0.42), (x + 0.4, 1.15))
    # experts
    ex_y = 2.7
    exs = [0.4 + i * 1.15 for i in range(4)]
    for i, x in enumerate(exs):
        box(ax, x, ex_y, 0.95, 0.6, f"expert {i + 1}\nFFN", BLOCK, size=FONT - 1)
    # routing of x1 (tokens the figure follows): to experts 1 and 3 with gates
    label(
        ax,
        5.0,
        1.15,
        "x1 → experts 1, 3\n(gates 0.7, 0.3)",
        ha="left",
        size=FONT - 2,
        color=GREY,
    )
    arrow(ax, (0.9, 1.65), (exs[0] + 0.45, ex_y), lw=1.4)
    arrow(ax, (0.9, 1.65), (exs[2] + 0.45, ex_y), lw=1.4)
    label(ax, 0.72, 2.2, "g=0.7", size=FONT - 2, ha="right")
    label(ax, 2.35, 2.0, "g=0.3", size=FONT - 2)
    # other tokens faintly
    for a, b in ((1.25, 1), (2.4, 3), (2.4, 1)):
        arrow(ax, (0.8 + a, 1.65), (exs[b] + 0.45, ex_y), color=GREY, lw=0.8)
    # weighted sum for x1
    circle_add(ax, 1.6, 3.95, r=0.15, symbol="Σ")
    arrow(ax, (exs[0] + 0.45, ex_y + 0.6), (1.47, 3.9), rad=-0.1)
    arrow(ax, (exs[2] + 0.45, ex_y + 0.6), (1.73, 3.9), rad=0.1)
    arrow(ax, (1.6, 4.1), (1.6, 4.55))
    label(ax, 1.6, 4.72, "y1 = x1 + 0.7·E1(x1) + 0.3·E3(x1)", size=FONT - 1)
    # the dropped token: its expert is full
    for b, cross in ((2, (3.75, 2.05)), (3, (4.33, 2.2))):
        arrow(
            ax,
            (txs[3] + 0.4, 1.65),
            (exs[b] + 0.45, ex_y),
            color=ACCENT,
            dashed=True,
            lw=1.0,
        )
        ax.text(*cross, "✕", ha="center", va="center", color=ACCENT, fontsize=FONT + 2)
    label(
        ax,
        4.95,
        3.0,
        "x4 comes last: its experts\n3 and 4 are already full\n(capacity C reached)",
        ha="left",
        size=FONT - 2,
        color=ACCENT,
    )
    # residual for the dropped token
    line(ax, [txs[3] + 0.8, 7.1], [tok_y + 0.21, tok_y + 0.21], color=ACCENT, lw=1.3)
    line(ax, [7.1, 7.1], [tok_y + 0.21, 4.3], color=ACCENT, lw=1.3)
    arrow(ax, (7.1, 4.3), (7.1, 4.55), color=ACCENT, lw=1.3)
    label(ax, 7.0, 4.72, "y4 = x4", size=FONT - 1, color=ACCENT)
    label(
        ax,
        6.95,
        2.0,
        "x4 is dropped:\nonly the residual\ncarries it on",
        ha="right",
        size=FONT - 2,
        color=ACCENT,
    )
    return fig


FIGURES = {
    "qkv_lookup": qkv_lookup,
    "prenorm_block": prenorm_block,
    "encoder_decoder": encoder_decoder,
    "kv_cache": kv_cache,
    "lora": lora,
    "moe_routing": moe_routing,
}


def draw_all(out_dir: Path | str = FIG_DIR, *, png: bool = False) -> list[Path]:
    """Write every figure as SVG (and a PNG twin if asked) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context():
        _style()
        for name, draw in FIGURES.items():
            fig = draw()
            path = out_dir / f"{name}.svg"
            fig.savefig(path, format="svg", metadata={"Date": None})
            if png:
                fig.savefig(out_dir / f"{name}.png", format="png", dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(FIG_DIR))
    parser.add_argument("--png", action="store_true", help="also write PNG twins")
    args = parser.parse_args(argv)
    for path in draw_all(args.out_dir, png=args.png):
        print(path)


if __name__ == "__main__":
    main()
