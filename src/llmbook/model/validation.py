"""Input checks shared by the models: clear errors for bad token ids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_ids", "check_sizes"]


def check_ids(name: str, idx: Tensor, vocab_size: int, max_len: int) -> None:
    """Raise a clear error unless ``idx`` is a (batch, seq) tensor of valid token ids.

    The range check reads the values, which on a GPU would wait for the device on
    every forward pass; there an out-of-range id trips the embedding's own
    device-side check instead, so only tensors on the CPU are range-checked.
    """
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int32, torch.int64):
        got = idx.dtype if isinstance(idx, Tensor) else type(idx).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids, got {got}")
    if idx.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seq), got {tuple(idx.shape)}")
    if idx.shape[1] > max_len:
        raise ValueError(
            f"{name} has length {idx.shape[1]}, longer than context_length={max_len}"
        )
    if idx.device.type == "cpu" and idx.numel():
        lo, hi = (int(t) for t in torch.aminmax(idx))  # one pass over the ids
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name} holds ids in [{lo}, {hi}], outside the vocabulary "
                f"[0, {vocab_size})"
            )


def check_sizes(config: Any) -> None:
    """Validate a model config's sizes (GPTConfig, EncoderConfig) with clear errors."""
    for name in ("vocab_size", "context_length", "d_model", "n_heads"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("n_layers", "d_ff"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if config.d_model % config.n_heads != 0:
        raise ValueError(
            f"d_model ({config.d_model}) must be divisible by n_heads "
            f"({config.n_heads})"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    if config.layer_norm_eps <= 0:
        raise ValueError(f"layer_norm_eps must be > 0, got {config.layer_norm_eps}")
