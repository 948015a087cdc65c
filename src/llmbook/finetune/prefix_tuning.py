"""Prefix tuning (Li & Liang, 2021), built from scratch (Chapter 7).

Prompt tuning learns vectors at the *input*; prefix tuning learns them at every
layer. Each attention layer gets ``n_prefix`` extra keys and values that every real
token may attend to (the prefix is visible to all positions; the real tokens stay
causal among themselves). The model is frozen; what trains is

    prefix: (n_layers, 2, n_heads, n_prefix, d_head)   index 0 = keys, 1 = values

That is exactly a KV cache that already holds ``n_prefix`` positions nobody ever
computed: :meth:`PrefixTuning.kv_cache` returns one, and
:func:`llmbook.decoding.forward_with_cache` (Chapter 6) then gives the same logits
as :meth:`PrefixTuning.forward`, which hands the prefix to
:meth:`llmbook.model.GPT.forward` as ``past_key_values`` (with gradients for it).

Optionally (``projection_dim``) the prefix is reparameterised as in the paper: a
(n_prefix, d_model) embedding goes through ``Linear -> tanh -> Linear`` onto the
``n_layers * 2 * d_model`` numbers of each prefix position, which trains more
stably; after training the MLP can be thrown away, keeping only its output.

Conventions (the same as ``peft``'s ``PeftModelForCausalLM`` with a
``PrefixTuningConfig``, which ``tests/unit/finetune/test_finetune.py`` checks within 1e-5):

* the prefix occupies positions ``0 .. n_prefix - 1``, so the real tokens get the
  position embeddings of ``n_prefix .. n_prefix + seq - 1`` (as in a cache), and
  ``n_prefix + seq`` must fit in ``context_length``;
* forward returns the logits of the real tokens only: (batch, seq, vocab);
* the prefix is never padding: an ``attention_mask`` only masks real tokens;
* the prefix starts as N(0, 1) numbers, as ``peft``'s does.

``peft`` stores the prefix flattened, one row of ``n_layers * 2 * d_model`` numbers
per prefix position, ordered (layer, key/value, head, d_head);
:func:`unflatten_prefix` turns that into our layout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llmbook.decoding.kv_cache import KVCache
from llmbook.finetune.prompt_tuning import check_attention_mask
from llmbook.model.validation import check_ids

__all__ = ["PrefixTuning", "unflatten_prefix"]


def unflatten_prefix(flat: Tensor, n_layers: int, n_heads: int) -> Tensor:
    """(n_prefix, n_layers * 2 * d_model), each row ordered (layer, key/value,
    head, d_head) -> (n_layers, 2, n_heads, n_prefix, d_head)."""
    if flat.dim() != 2 or flat.shape[1] % (2 * n_layers * n_heads) != 0:
        raise ValueError(
            f"expected a flat prefix (n_prefix, n_layers * 2 * d_model) with "
            f"n_layers={n_layers}, n_heads={n_heads}; got shape {tuple(flat.shape)}"
        )
    n_prefix = flat.shape[0]
    d_head = flat.shape[1] // (2 * n_layers * n_heads)
    per_pos = flat.view(n_prefix, n_layers, 2, n_heads, d_head)
    return per_pos.permute(1, 2, 3, 0, 4)  # (n_layers, 2, n_heads, n_prefix, d_head)


class PrefixTuning(nn.Module):
    """A frozen causal LM whose attention layers see ``n_prefix`` learned keys and
    values in front of the sequence's own (see the module docstring).

    Without ``projection_dim``: ``prefix`` is the (n_layers, 2, n_heads, n_prefix,
    d_head) parameter. With it: ``embedding`` (n_prefix, d_model) and ``transform``
    (``Linear(d_model, projection_dim) -> Tanh -> Linear(projection_dim,
    n_layers * 2 * d_model)``) compute it. :meth:`prefix_kv` returns the prefix
    either way.

    ``model`` (a course GPT, or any model whose forward takes ``past_key_values``
    and ``attention_mask`` like it, with ``tok_emb`` and a ``config``) is frozen in
    place. forward(idx (batch, seq), attention_mask (batch, seq) or
    None) -> logits (batch, seq, vocab_size).
    """

    def __init__(
        self, model: nn.Module, n_prefix: int, projection_dim: int | None = None
    ) -> None:
        super().__init__()
        cfg = model.config
        if not isinstance(n_prefix, int) or n_prefix < 1:
            raise ValueError(f"n_prefix must be a positive integer, got {n_prefix!r}")
        if n_prefix >= cfg.context_length:
            raise ValueError(
                f"n_prefix={n_prefix} leaves no positions for real tokens in "
                f"context_length={cfg.context_length}"
            )
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1, got {projection_dim}")
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.n_prefix, self.projection_dim = n_prefix, projection_dim
        d_model, n_layers, n_heads = cfg.d_model, cfg.n_layers, cfg.n_heads
        dtype = model.tok_emb.weight.dtype
        device = model.tok_emb.weight.device
        if projection_dim is None:
            shape = (n_layers, 2, n_heads, n_prefix, d_model // n_heads)
            self.prefix = nn.Parameter(torch.randn(shape, dtype=dtype, device=device))
        else:
            self.embedding = nn.Parameter(
                torch.randn(n_prefix, d_model, dtype=dtype, device=device)
            )
            self.transform = nn.Sequential(
                nn.Linear(d_model, projection_dim),
                nn.Tanh(),
                nn.Linear(projection_dim, n_layers * 2 * d_model),
            ).to(device=device, dtype=dtype)

    def prefix_kv(self) -> Tensor:
        """The keys and values: (n_layers, 2, n_heads, n_prefix, d_head)."""
        if self.projection_dim is None:
            return self.prefix
        cfg = self.model.config
        flat = self.transform(self.embedding)  # (n_prefix, n_layers * 2 * d_model)
        return unflatten_prefix(flat, cfg.n_layers, cfg.n_heads)

    @torch.no_grad()
    def load_flat(self, flat: Tensor) -> None:
        """Set the prefix from the flat (n_prefix, n_layers * 2 * d_model) layout
        that ``peft`` stores (only without ``projection_dim``)."""
        if self.projection_dim is not None:
            raise ValueError("load_flat needs projection_dim=None (a direct prefix)")
        cfg = self.model.config
        kv = unflatten_prefix(flat, cfg.n_layers, cfg.n_heads)
        if kv.shape != self.prefix.shape:
            raise ValueError(
                f"flat prefix unflattens to {tuple(kv.shape)}, expected "
                f"{tuple(self.prefix.shape)}"
            )
        self.prefix.copy_(kv)

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        m, n_p = self.model, self.n_prefix
        cfg = m.config
        if idx.dim() == 2 and n_p + idx.shape[1] > cfg.context_length:
            raise ValueError(
                f"{idx.shape[1]} tokens after {n_p} prefix positions exceed "
                f"context_length={cfg.context_length}"
            )
        check_ids("idx", idx, cfg.vocab_size, cfg.context_length)
        check_attention_mask(attention_mask, idx)
        if attention_mask is not None:  # the prefix is never padding
            ones = attention_mask.new_ones(idx.shape[0], n_p)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        kv = self.prefix_kv()  # (n_layers, 2, n_heads, n_p, d_head)
        past = [(kv[layer, 0][None], kv[layer, 1][None]) for layer in range(len(kv))]
        # query i sees all n_p prefix keys and the real keys 0 .. i, at positions
        # n_p .. n_p + seq - 1
        return m(idx, past_key_values=past, attention_mask=attention_mask)

    @torch.no_grad()
    def kv_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """A :class:`~llmbook.decoding.KVCache` holding the prefix as its first
        ``n_prefix`` positions: ``forward_with_cache(model, idx, cache)`` then
        computes what this module's forward does, and can go on generating."""
        cache = KVCache(self.model, batch, max_len)
        kv = self.prefix_kv()
        for layer in range(kv.shape[0]):
            k, v = (kv[layer, i].expand(batch, -1, -1, -1) for i in (0, 1))
            cache.append(layer, k, v)
        cache.length = self.n_prefix
        return cache
