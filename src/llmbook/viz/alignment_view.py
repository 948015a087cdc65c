"""Cross-attention alignment maps of a translation model (Chapter 9).

* :func:`alignment_maps` translates one sentence greedily and returns the decoder's
  cross-attention (n_layers, n_heads, tgt_len, src_len) with both token lists;
* :func:`alignment_figure` draws one layer/head (or the mean over heads) with
  matplotlib;
* :class:`AlignmentExplorer` is the ipywidgets version: type an English sentence,
  pick a layer and a head, and the translation and its map are recomputed (it needs
  a kernel);
* in the static book, ``attention_view(maps, tgt_tokens, cross_tokens=src_tokens)``
  (:mod:`llmbook.viz.attention_view`) shows precomputed maps without a kernel.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from llmbook.viz.plotting import plot_attention

__all__ = ["alignment_maps", "alignment_figure", "AlignmentExplorer"]


def alignment_maps(
    model, src_tok, vocab, text: str, max_len: int = 64
) -> dict[str, Any]:
    """Greedy translation of ``text`` and the cross-attention that produced it.

    Returns ``{"translation", "src_tokens", "tgt_tokens", "attentions"}``: row i of
    ``attentions[layer, head]`` is where the decoder looked while writing target
    token i (the translation's characters, then ``</s>``).
    """
    from llmbook.translate import cross_attention, greedy_translate

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    translation = greedy_translate(model, [text], src_tok, vocab, max_len)[0]
    tgt_ids = vocab.encode(translation)  # <bos> chars <eos>
    maps = cross_attention(model, src_tok.encode(text), tgt_ids[:-1])
    tgt_tokens = [vocab.itos[i] for i in tgt_ids[1:-1]] + ["</s>"]
    return {"translation": translation, "src_tokens": src_tok.tokens(text),
            "tgt_tokens": tgt_tokens, "attentions": maps}  # fmt: skip


def alignment_figure(
    maps: dict[str, Any], layer: int = 0, head: int | None = None
) -> Figure:
    """One cross-attention map as a heatmap: rows = Chinese output, columns = English
    source tokens. ``head=None`` averages over heads. The figure is closed (shown
    once by whoever displays it)."""
    att = maps["attentions"]
    if not 0 <= layer < att.shape[0]:
        raise ValueError(f"layer must be in [0, {att.shape[0] - 1}], got {layer}")
    if head is not None and not 0 <= head < att.shape[1]:
        raise ValueError(f"head must be in [0, {att.shape[1] - 1}] or None, got {head}")
    weights = att[layer].mean(0) if head is None else att[layer, head]
    n_q, n_k = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n_k + 2), max(2.5, 0.4 * n_q + 1.2)),
                           layout="constrained")  # fmt: skip
    which = "mean over heads" if head is None else f"head {head}"
    plot_attention(weights, maps["tgt_tokens"], maps["src_tokens"], ax=ax, vmin=0.0,
                   vmax=1.0, title=f"layer {layer}, {which}")  # fmt: skip
    plt.close(fig)
    return fig


class AlignmentExplorer:
    """Type a sentence, see its translation and the cross-attention, live.

    ``explorer.widget`` is an ``ipywidgets.VBox``; ``explorer.widget.controls`` holds
    the text box and the layer/head controls (for scripts and tests).
    """

    def __init__(self, model, src_tok, vocab, text: str = "Search the documentation"):
        self.model, self.src_tok, self.vocab, self.text = model, src_tok, vocab, text
        self.n_layers = len(model.decoder)
        self.n_heads = model.decoder[0].cross_attn.n_heads
        self.last_maps: dict[str, Any] | None = None
        self._widget = None

    @property
    def widget(self):
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _build_widget(self):
        import ipywidgets as widgets
        from IPython.display import display

        text = widgets.Text(
            value=self.text, description="English", continuous_update=False
        )
        layer = widgets.IntSlider(0, min=0, max=self.n_layers - 1, description="layer")
        head = widgets.Dropdown(options=[("mean", -1)] + [(str(h), h) for h in
                                range(self.n_heads)], value=-1, description="head")  # fmt: skip
        out = widgets.Output()

        def render(change=None) -> None:
            if text.value.strip():
                self.last_maps = alignment_maps(
                    self.model, self.src_tok, self.vocab, text.value
                )
            if self.last_maps is None:
                return
            fig = alignment_figure(
                self.last_maps, layer.value, None if head.value < 0 else head.value
            )
            with out:
                out.clear_output(wait=True)
                print(f"{text.value}  ->  {self.last_maps['translation']}")
                display(fig)

        for control in (text, layer, head):
            control.observe(render, names="value")
        render()
        box = widgets.VBox([text, widgets.HBox([layer, head]), out])
        box.controls = {"text": text, "layer": layer, "head": head}
        return box

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
