"""Weight initialisation (Chapter 4): Xavier/Glorot, He/Kaiming, GPT-2's scheme."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from llmbook.model.layers import LayerNorm

__all__ = ["xavier_uniform_", "he_normal_", "init_normal_", "init_gpt2_"]


def _fans(tensor: Tensor) -> tuple[int, int]:
    if tensor.dim() < 2:
        raise ValueError(
            f"fan in/out need a tensor with >= 2 dims, got shape {tuple(tensor.shape)}"
        )
    receptive = math.prod(tensor.shape[2:])  # 1 for a Linear weight (out, in)
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


@torch.no_grad()
def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Glorot/Xavier: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Variance ``2 / (fan_in + fan_out)``: keeps activations and gradients of a
    linear layer at the same scale going forward and backward (a compromise).
    """
    fan_in, fan_out = _fans(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return tensor.uniform_(-a, a, generator=generator)


@torch.no_grad()
def he_normal_(
    tensor: Tensor,
    gain: float = 2**0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming: N(0, std^2) with ``std = gain / sqrt(fan_in)``.

    The default gain sqrt(2) compensates for ReLU zeroing half of its inputs, so the
    activations' second moment stays constant through depth.
    """
    fan_in, _ = _fans(tensor)
    return tensor.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)


@torch.no_grad()
def init_normal_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Linear and embedding weights ~ N(0, std^2), biases 0, LayerNorm gains 1 and
    biases 0, in place (the common part of GPT-2's and BERT's schemes)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, LayerNorm):
            module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
    return model


@torch.no_grad()
def init_gpt2_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """GPT-2's initialisation, in place.

    Linear and embedding weights ~ N(0, 0.02^2), biases 0, LayerNorm weights 1; the
    projections that write into the residual stream (attention ``out_proj`` and
    feed-forward ``fc2``, and a decoder block's cross-attention ``out_proj``) get std
    ``0.02 / sqrt(N)``, where N is the number of such projections in the model (``2 *
    n_layers`` for GPT-2), because each adds one term to the stream and their
    variances add up. Blocks name those layers in ``residual_projections()``.
    """
    residual = [
        proj
        for module in model.modules()
        if hasattr(module, "residual_projections")
        for proj in module.residual_projections()
    ]
    init_normal_(model, std)
    for proj in residual:
        proj.weight.normal_(0.0, std / math.sqrt(max(1, len(residual))))
    return model
