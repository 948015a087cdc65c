"""Interactive widgets for looking at attention (Chapter 3) and decoding (Chapter 6).

* :class:`AttentionExplorer` browses the attention maps of a real model (the output of
  ``llmbook.model.encoders.attention_maps``): pick a sentence, a layer and a head, or average
  over the heads.
* :func:`temperature_explorer` shows how a temperature T reshapes a softmax.
* :func:`decoding_explorer` (Chapter 6) shows decoding settings reshaping a model's
  next-token distribution, with a sampled continuation.

The widgets need a live Python kernel (Jupyter, Colab); on a static page they render as
nothing. Everything they draw comes from plain functions that work without a frontend
(:meth:`AttentionExplorer.figure`, :func:`temperature_figure`,
:func:`softmax_with_temperature`), which is what the tests call.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from llmbook.viz.decoding_view import (
    _config,
    _prompt_ids,
    decoding_figure,
    sample_continuation,
)
from llmbook.viz.plotting import plot_attention

__all__ = [
    "AttentionExplorer",
    "decoding_explorer",
    "softmax_with_temperature",
    "entropy",
    "temperature_figure",
    "temperature_explorer",
]


# --- attention maps --------------------------------------------------------------------


class AttentionExplorer:
    """Browse attention maps: sentence x layer x head (or the mean over heads).

    maps: one dict per sentence with ``"tokens"`` (list of n strings) and
    ``"attentions"`` (n_layers, n_heads, n, n), e.g. ``attention_maps(sentences)``.
    sentences: the texts, used as the dropdown's labels (same length as ``maps``).

    ``explorer.figure(sentence=0, layer=2, head=3)`` returns the heatmap as a Figure
    (``head=None`` averages over heads); ``explorer.widget`` (or just ``explorer`` as
    the last line of a cell) shows the interactive version.
    """

    def __init__(self, maps: Sequence[Mapping[str, Any]], sentences: Sequence[str]):
        if isinstance(sentences, str):
            raise TypeError("sentences must be a list of strings, not one string")
        if len(maps) == 0:
            raise ValueError(
                "maps is empty: pass at least one sentence's attention map"
            )
        if len(maps) != len(sentences):
            raise ValueError(
                f"got {len(maps)} attention maps but {len(sentences)} sentences; "
                "pass one sentence per map, in the same order"
            )
        self.sentences = list(sentences)
        self.tokens: list[list[str]] = []
        self.attentions: list[Tensor] = []
        for i, m in enumerate(maps):
            if "tokens" not in m or "attentions" not in m:
                raise ValueError(
                    f"maps[{i}] must have keys 'tokens' and 'attentions', "
                    f"got {sorted(m)}"
                )
            att = torch.as_tensor(m["attentions"]).detach().to("cpu")
            n = len(m["tokens"])
            if att.dim() != 4 or att.shape[-2:] != (n, n):
                raise ValueError(
                    f"maps[{i}]['attentions'] must have shape (n_layers, n_heads, "
                    f"{n}, {n}) for its {n} tokens, got {tuple(att.shape)}"
                )
            self.tokens.append(list(m["tokens"]))
            self.attentions.append(att)
        self.n_layers, self.n_heads = self.attentions[0].shape[:2]
        for i, att in enumerate(self.attentions[1:], start=1):
            if tuple(att.shape[:2]) != (self.n_layers, self.n_heads):
                raise ValueError(
                    f"maps[{i}] has {tuple(att.shape[:2])} (layers, heads) but maps[0] "
                    f"has {(self.n_layers, self.n_heads)}"
                )
        self.last_figure: Figure | None = None
        self._widget = None

    def weights(
        self, sentence: int = 0, layer: int = 0, head: int | None = 0
    ) -> Tensor:
        """The (n, n) weights shown for these choices; ``head=None`` = mean over heads."""
        if not 0 <= sentence < len(self.sentences):
            raise IndexError(
                f"sentence must be in [0, {len(self.sentences) - 1}], got {sentence}"
            )
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer must be in [0, {self.n_layers - 1}], got {layer}")
        att = self.attentions[sentence][layer]  # (n_heads, n, n)
        if head is None:
            return att.mean(dim=0)
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head must be in [0, {self.n_heads - 1}], got {head}")
        return att[head]

    def figure(self, sentence: int = 0, layer: int = 0, head: int | None = 0) -> Figure:
        """Render one heatmap and return its Figure (closed, so it is shown once).

        ``head=None`` shows the average over all heads of that layer.
        """
        weights = self.weights(sentence, layer, head)
        tokens = self.tokens[sentence]
        n = len(tokens)
        fig, ax = plt.subplots(
            figsize=(max(4.0, 0.42 * n + 2.0), max(3.0, 0.36 * n + 1.2)),
            layout="constrained",
        )
        which = "mean over heads" if head is None else f"head {head}"
        plot_attention(
            weights, tokens, ax=ax, vmin=0.0, vmax=1.0, title=f"layer {layer}, {which}"
        )
        plt.close(fig)  # the caller (or the widget) decides where it is displayed
        self.last_figure = fig
        return fig

    @property
    def widget(self):
        """The interactive explorer (an ``ipywidgets.VBox``), built on first use."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _build_widget(self):
        import ipywidgets as widgets
        from IPython.display import display

        labels = [
            (s if len(s) <= 60 else s[:57] + "...", i)
            for i, s in enumerate(self.sentences)
        ]
        sentence = widgets.Dropdown(options=labels, value=0, description="sentence")
        layer = widgets.IntSlider(
            value=0, min=0, max=self.n_layers - 1, description="layer"
        )
        head = widgets.IntSlider(
            value=0, min=0, max=self.n_heads - 1, description="head"
        )
        average = widgets.Checkbox(value=False, description="average over heads")
        out = widgets.Output()

        def render(change=None) -> None:
            head.disabled = average.value
            fig = self.figure(
                sentence.value, layer.value, None if average.value else head.value
            )
            with out:
                out.clear_output(wait=True)
                display(fig)

        for control in (sentence, layer, head, average):
            control.observe(render, names="value")
        render()
        box = widgets.VBox([sentence, widgets.HBox([layer, head, average]), out])
        box.controls = {  # handy for tests and for scripting the explorer
            "sentence": sentence,
            "layer": layer,
            "head": head,
            "average": average,
        }
        return box

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


# --- temperature -----------------------------------------------------------------------


def _as_scores(scores: Any) -> Tensor:
    s = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(
            f"scores must be a non-empty 1-D sequence, got shape {tuple(s.shape)}"
        )
    if not torch.isfinite(s).all():
        raise ValueError("scores must be finite (no inf or nan)")
    return s


def _check_temperature(T: float) -> float:
    T = float(T)
    if not (T > 0 and math.isfinite(T)):
        raise ValueError(f"temperature T must be a positive finite number, got {T}")
    return T


def softmax_with_temperature(scores: Any, T: float = 1.0) -> Tensor:
    """``softmax(scores / T)`` as a float64 tensor of the same length.

    Small T sharpens the distribution towards a one-hot vector on the largest score
    (ties share the mass equally); large T flattens it towards uniform. Computed with
    the maximum subtracted first, so even T = 1e-6 does not overflow.
    """
    s = _as_scores(scores) / _check_temperature(T)
    return torch.softmax(s - s.max(), dim=0)


def entropy(p: Any) -> float:
    """Shannon entropy in nats of a probability vector (0 log 0 counts as 0)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return float(-(p * torch.log(p.clamp_min(1e-300))).sum())


def _check_labels(scores: Tensor, labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise TypeError("labels must be a list of strings, not one string")
    if len(labels) != scores.numel():
        raise ValueError(
            f"got {scores.numel()} scores but {len(labels)} labels; "
            "pass one label per score"
        )
    return [str(label) for label in labels]


def temperature_figure(scores: Any, labels: Sequence[str], T: float = 1.0) -> Figure:
    """Bar chart of ``softmax(scores / T)`` with its entropy in the title (closed)."""
    s = _as_scores(scores)
    labels = _check_labels(s, labels)
    p = softmax_with_temperature(s, T).numpy()
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.6 * len(labels) + 1.5), 3.0), layout="constrained"
    )
    ax.bar(np.arange(len(p)), p, color="tab:blue")
    ax.set_xticks(np.arange(len(p)), labels=labels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("weight")
    ax.set_title(
        f"T = {T:.3g}: entropy {entropy(p):.3f} nats (max {math.log(len(p)):.3f})"
    )
    plt.close(fig)
    return fig


def temperature_explorer(scores: Any, labels: Sequence[str], T: float = 1.0):
    """A slider for T (0.01 to 100, log scale) over bars of ``softmax(scores / T)``.

    Prints the entropy (nats) and the largest weight under the bars. Returns an
    ``ipywidgets.VBox``; its ``.controls["T"]`` is the slider.
    """
    import ipywidgets as widgets
    from IPython.display import display

    s = _as_scores(scores)
    labels = _check_labels(s, labels)
    T = _check_temperature(T)
    slider = widgets.FloatLogSlider(
        value=T,
        base=10,
        min=-2,
        max=2,
        step=0.05,
        description="T",
        readout_format=".3g",
    )
    out = widgets.Output()

    def render(change=None) -> None:
        p = softmax_with_temperature(s, slider.value)
        fig = temperature_figure(s, labels, slider.value)
        with out:
            out.clear_output(wait=True)
            display(fig)
            print(
                f"entropy = {entropy(p):.3f} nats "
                f"(uniform: {math.log(len(p)):.3f}); largest weight = {p.max():.3f} "
                f"on {labels[int(p.argmax())]!r}"
            )

    slider.observe(render, names="value")
    render()
    box = widgets.VBox([slider, out])
    box.controls = {"T": slider}
    return box


def decoding_explorer(
    model: nn.Module,
    tokenizer,
    prompt: str,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    min_p: float = 0.0,
    n_tokens: int = 15,
    continuation_tokens: int = 30,
    seed: int = 0,
):
    """Widgets for decoding settings over the next-token bars and a continuation.

    A prompt box; sliders for temperature (0 = greedy), top-k (0 = off), top-p and
    min-p (0 = off); a seed box and a "resample" button that moves to the next seed.
    Needs a live kernel. Returns an ``ipywidgets.VBox`` whose ``.controls`` holds
    the controls by name (``prompt``, ``temperature``, ``top_k``, ``top_p``,
    ``min_p``, ``seed``, ``resample``) and ``.text`` the continuation's HTML.
    """
    import ipywidgets as widgets
    from IPython.display import display

    _prompt_ids(model, tokenizer, prompt)  # fail here, not inside the widget
    _config(temperature, top_k, top_p, min_p or None)
    slider = widgets.FloatSlider
    controls = {
        "prompt": widgets.Textarea(
            prompt, description="prompt", continuous_update=False
        ),
        "temperature": slider(temperature, min=0, max=2, step=0.05, description="T"),
        "top_k": widgets.IntSlider(top_k or 0, min=0, max=100, description="top-k"),
        "top_p": slider(top_p, min=0.05, max=1, step=0.05, description="top-p"),
        "min_p": slider(min_p, min=0, max=0.5, step=0.01, description="min-p"),
        "seed": widgets.IntText(seed, description="seed"),
        "resample": widgets.Button(description="resample"),
    }
    out, text = widgets.Output(), widgets.HTML()

    def render(change=None) -> None:
        v = {name: c.value for name, c in controls.items() if name != "resample"}
        text_in, n_new = v["prompt"], continuation_tokens
        with out:
            out.clear_output(wait=True)
            try:
                config = _config(
                    v["temperature"], v["top_k"] or None, v["top_p"], v["min_p"] or None
                )
                fig = decoding_figure(model, tokenizer, text_in, config, n_tokens)
                new = sample_continuation(
                    model, tokenizer, text_in, config, n_new, v["seed"]
                )
            except ValueError as err:
                text.value = ""
                print(err)
                return
            display(fig)
        text.value = (
            '<div style="white-space:pre-wrap;font-family:monospace">'
            f'<span style="color:#666">{html.escape(text_in)}</span>'
            f"<b>{html.escape(new)}</b></div>"
        )

    def resample(button) -> None:
        controls["seed"].value += 1  # re-renders through the observer

    for name, control in controls.items():
        if name != "resample":
            control.observe(render, names="value")
    controls["resample"].on_click(resample)
    render()
    buttons = widgets.HBox([controls["seed"], controls["resample"]])
    sliders = [controls[k] for k in ("temperature", "top_k", "top_p", "min_p")]
    box = widgets.VBox([controls["prompt"], *sliders, buttons, out, text])
    box.controls, box.text = controls, text
    return box
