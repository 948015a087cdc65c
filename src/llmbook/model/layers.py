"""The Transformer's building blocks besides attention (Chapter 4).

``LayerNorm``, the position-wise ``FeedForward`` network, the fixed sinusoidal
position table and rotary position embeddings (``apply_rope``). Tested against
``torch.nn.LayerNorm`` and independent implementations in ``tests/unit/model/test_layers.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "LayerNorm",
    "FeedForward",
    "sinusoidal_positions",
    "apply_rope",
    "copy_linear",
    "copy_norm",
]

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


class LayerNorm(nn.Module):
    """Normalise each vector to mean 0 and variance 1, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last dim, with the
    biased (1/n) variance, as ``torch.nn.LayerNorm``. x: (..., d_model).
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"LayerNorm expects last dim {self.weight.shape[0]}, "
                f"got shape {tuple(x.shape)}"
            )
        # Chapter 4 writes the formula out (mean, biased variance, normalise, scale,
        # shift); here PyTorch's fused kernel computes the same thing in one pass
        # (tests/unit/model/test_layers.py checks both agree), which makes a training step on
        # the CPU markedly faster than the six separate element-wise operations.
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def _activation(name: str, x: Tensor) -> Tensor:
    if name == "gelu":
        return F.gelu(x)  # exact, with erf (BERT, torch's "gelu")
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")  # GPT-2's "gelu_new"
    return F.relu(x)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``fc2(act(fc1(x)))``.

    d_model -> d_ff -> d_model, applied to every position separately.
    ``activation`` is "gelu_tanh" (GPT-2's tanh approximation), "gelu" (exact) or
    "relu" (the original Transformer). x: (..., d_model) -> (..., d_model).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        bias: bool = True,
        activation: str = "gelu_tanh",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {ACTIVATIONS}, got {activation!r}"
            )
        self.activation = activation
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = _activation(self.activation, self.fc1(x))  # (..., d_ff)
        if self.training:  # dropout is the identity in eval: skip the call
            h = self.dropout(h)
        return self.fc2(h)  # (..., d_model)


def sinusoidal_positions(n: int, d: int, base: float = 10000.0) -> Tensor:
    """The fixed sinusoidal position table of the original Transformer, (n, d).

    ``PE[p, 2i] = sin(p / base^(2i/d))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d))``.
    """
    if n < 1 or d < 2 or d % 2 != 0:
        raise ValueError(f"need n >= 1 and an even d >= 2, got n={n}, d={d}")
    position = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    freq = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    angle = position * freq  # (n, d/2)
    pe = torch.empty(n, d)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


def apply_rope(
    x: Tensor, positions: Tensor | None = None, base: float = 10000.0
) -> Tensor:
    """Rotary position embedding: rotate each pair (x_2i, x_2i+1) by ``p * theta_i``.

    x: (..., seq, d) with d even; positions: (seq,) (default 0..seq-1).
    ``theta_i = base^(-2i/d)``. Rotations make ``rope(q, m) . rope(k, n)`` depend on
    the positions only through ``m - n``.
    """
    d = x.shape[-1]
    if d % 2 != 0:
        raise ValueError(
            f"apply_rope needs an even last dim, got shape {tuple(x.shape)}"
        )
    if positions is None:
        positions = torch.arange(x.shape[-2], device=x.device)
    theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=x.dtype) / d)
    angle = positions.to(x.dtype)[:, None] * theta  # (seq, d/2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


@torch.no_grad()
def copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    """Copy ``theirs``' weight (and bias, when both have one) into ``ours``."""
    ours.weight.copy_(theirs.weight)
    if ours.bias is not None and theirs.bias is not None:
        ours.bias.copy_(theirs.bias)


@torch.no_grad()
def copy_norm(ours: LayerNorm, theirs: nn.LayerNorm) -> None:
    """Copy ``theirs``' gain, bias and epsilon into ``ours`` (both LayerNorms)."""
    ours.weight.copy_(theirs.weight)
    if ours.bias is not None and theirs.bias is not None:
        ours.bias.copy_(theirs.bias)
    ours.eps = theirs.eps
