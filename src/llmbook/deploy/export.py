"""Compilation and export of the course GPT (Chapter 11, section 3).

``GPT.forward`` checks its ids with a data-dependent test (``idx.max() <
vocab_size``), which tracing compilers cannot put in a graph: ``torch.export``
fails on it and ``torch.compile`` breaks the graph there. :class:`TracedGPT`
looks the embeddings up itself and calls the same forward with ``inputs_embeds``,
which has no id check (validate ids before calling it), so the whole forward pass
is one graph. :func:`export_onnx` writes it as ONNX with
dynamic batch and sequence sizes; ``tests/unit/deploy/test_serve.py`` runs the file with
onnxruntime and checks the logits equal PyTorch's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["TracedGPT", "export_onnx", "onnx_session"]


class TracedGPT(nn.Module):
    """The course ``GPT``'s forward pass without the id check (same weights,
    shared): (batch, seq) ids -> (batch, seq, vocab) logits."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, idx: Tensor) -> Tensor:
        return self.gpt(inputs_embeds=self.gpt.tok_emb(idx))  # (batch, seq, vocab)


def export_onnx(
    model: nn.Module, path: str | Path, seq_len: int = 16, *, dynamo: bool = False
) -> Path:
    """Export ``model`` (a course GPT) to ONNX at ``path``: input ``idx``, output
    ``logits``, batch and sequence sizes dynamic (up to the context).

    ``dynamo=False`` traces with TorchScript (about a second here);
    ``dynamo=True`` uses the ``torch.export``-based exporter that PyTorch now
    recommends (the same graph, about a minute on a busy 2-core CPU)."""
    path = Path(path)
    traced = TracedGPT(model).eval()
    example = torch.zeros((2, seq_len), dtype=torch.long)
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        seq = torch.export.Dim("seq", min=1, max=model.config.context_length)
        kwargs = {"dynamo": True, "dynamic_shapes": {"idx": {0: batch, 1: seq}}}
    else:
        axes = {"idx": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
        kwargs = {"dynamo": False, "dynamic_axes": axes}
    torch.onnx.export(
        traced, (example,), str(path), input_names=["idx"],
        output_names=["logits"], verbose=False, **kwargs,
    )  # fmt: skip
    return path


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
