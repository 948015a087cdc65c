"""Input checks shared by the models: clear errors for bad token ids."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_ids"]


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
    if (
        idx.device.type == "cpu"
        and idx.numel()
        and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size)
    ):
        raise ValueError(
            f"{name} holds ids in [{int(idx.min())}, {int(idx.max())}], outside "
            f"the vocabulary [0, {vocab_size})"
        )
