"""Pictures of what models do: plots, ipywidgets explorers, kernel-free views.

Modules::

    plotting        matplotlib heatmaps of attention weights (Chapter 3)
    explorer        ipywidgets explorers for Colab and Jupyter (Chapters 3 and 6)
    attention_view  self-contained HTML/JS attention view for the static book
    decoding_view   decoding settings vs. the next token: figure, continuation and a
                    kernel-free HTML view (Chapter 6)
    alignment_view  cross-attention maps of the translator: figure and widget (Chapter 9)
"""

from llmbook.viz.alignment_view import (
    AlignmentExplorer,
    alignment_figure,
    alignment_maps,
)
from llmbook.viz.attention_view import AttentionView, attention_view
from llmbook.viz.decoding_view import (
    DecodingView,
    decoding_figure,
    decoding_view,
    sample_continuation,
)
from llmbook.viz.explorer import (
    AttentionExplorer,
    decoding_explorer,
    temperature_explorer,
)
from llmbook.viz.plotting import plot_attention, plot_heads, to_numpy

__all__ = [
    "AlignmentExplorer",
    "alignment_figure",
    "alignment_maps",
    "AttentionView",
    "attention_view",
    "DecodingView",
    "decoding_explorer",
    "decoding_figure",
    "decoding_view",
    "sample_continuation",
    "AttentionExplorer",
    "temperature_explorer",
    "plot_attention",
    "plot_heads",
    "to_numpy",
]
