"""A key-value cache for the course GPT (Chapter 6, section 5).

Without a cache, every generation step runs the whole sequence through the model
again, although only the last position's output is new: the keys and values of the
earlier positions are the same as in the step before. :class:`KVCache` keeps them,
one preallocated (batch, n_heads, max_len, d_head) buffer for keys and one for values
per layer, and :func:`forward_with_cache` runs only the new tokens, attending to the
cached keys and values plus their own.

The attention itself is the model's: :meth:`llmbook.model.GPT.forward` takes the cache
as ``past_key_values`` (and appends to it in place), so :func:`forward_with_cache` is
that call; ``tests/unit/decoding/test_decoding.py`` checks that the logits equal the uncached
forward pass's and that generation gives the same tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KVCache", "cache_bytes", "forward_with_cache"]


def cache_bytes(
    n_layers: int, d_model: int, seq_len: int, batch: int = 1, bytes_per_value: int = 4
) -> int:
    """Size of the keys and values of ``seq_len`` positions: 2 (K and V) x layers x
    batch x positions x d_model values (n_heads x d_head = d_model)."""
    return 2 * n_layers * batch * seq_len * d_model * bytes_per_value


class KVCache:
    """Keys and values of the positions seen so far, for every layer.

    ``length`` is the number of cached positions; :meth:`truncate` forgets the last
    ones (speculative decoding rolls back rejected draft tokens this way).
    """

    def __init__(
        self,
        model: nn.Module,
        batch: int,
        max_len: int | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        cfg = model.config
        self.max_len = cfg.context_length if max_len is None else max_len
        if self.max_len > cfg.context_length:
            raise ValueError(
                f"max_len={self.max_len} exceeds the model's context_length "
                f"{cfg.context_length} (its position table has no more rows)"
            )
        param = next(model.parameters())
        dtype = param.dtype if dtype is None else dtype
        device = param.device if device is None else device
        shape = (batch, cfg.n_heads, self.max_len, cfg.d_model // cfg.n_heads)
        self.keys = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)
        ]
        self.values = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)
        ]
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (allocated for ``max_len`` positions)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k``/``v`` (batch, n_heads, n_new, d_head) after the cached
        positions of ``layer``; return all keys and values so far (a view)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {end} needed")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} to {length}")
        self.length = length


@torch.no_grad()
def forward_with_cache(model: nn.Module, idx: Tensor, cache: KVCache) -> Tensor:
    """Logits (batch, n_new, vocab) for the new tokens ``idx`` (batch, n_new) that
    follow the ``cache.length`` cached positions; adds their keys and values."""
    start, n_new = cache.length, idx.shape[1]
    if start + n_new > cache.max_len:
        raise ValueError(
            f"{start} cached + {n_new} new positions exceed the cache's {cache.max_len}"
        )
    return model(idx, past_key_values=cache)  # (batch, n_new, vocab)
