"""Transformer blocks (Chapter 4): encoder, decoder, and the GPT block.

Every block names the linear layers that write into the residual stream in
``residual_projections()``; GPT-2's initialisation (:func:`llmbook.model.init.init_gpt2_`)
scales exactly those, whatever the block type.

Masks follow :mod:`llmbook.model.attention`: boolean, True = may attend.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

# Multi-head attention was built in Chapter 3.
from llmbook.model.attention import MultiHeadAttention
from llmbook.model.layers import FeedForward, LayerNorm, copy_linear, copy_norm

__all__ = ["EncoderBlock", "DecoderBlock", "GPTBlock", "KVExtender"]

# new keys, new values (batch, n_heads, seq, d_head) -> all keys and values to attend to
KVExtender = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _torch_activation(layer: nn.Module) -> str:
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    raise ValueError(f"unsupported activation in the torch layer: {act!r}")


class EncoderBlock(nn.Module):
    """Self-attention and feed-forward, each wrapped in a residual and a LayerNorm.

    Post-LN (the original Transformer, ``pre_ln=False``)::

        x = LayerNorm(x + SelfAttn(x));  x = LayerNorm(x + FFN(x))

    Pre-LN (GPT-2 and most modern models, ``pre_ln=True``)::

        x = x + SelfAttn(LayerNorm(x));  x = x + FFN(LayerNorm(x))

    x: (batch, seq, d_model) -> (batch, seq, d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        *,
        pre_ln: bool = False,
        bias: bool = True,
        activation: str = "gelu",
        eps: float = 1e-5,
        fused: bool = False,
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.pre_ln = pre_ln
        self.attn = MultiHeadAttention(d_model, n_heads, bias=bias, fused=fused)
        self.ln1 = LayerNorm(d_model, eps, bias)
        self.ff = FeedForward(d_model, d_ff, dropout, bias, activation)
        self.ln2 = LayerNorm(d_model, eps, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, is_causal: bool = False
    ) -> Tensor:
        """mask: bool, broadcastable to (batch, n_heads, seq, seq), True = attend."""
        if self.pre_ln:
            x = x + self.dropout(self.attn(self.ln1(x), mask=mask, is_causal=is_causal))
            return x + self.dropout(self.ff(self.ln2(x)))  # (batch, seq, d_model)
        x = self.ln1(x + self.dropout(self.attn(x, mask=mask, is_causal=is_causal)))
        return self.ln2(x + self.dropout(self.ff(x)))  # (batch, seq, d_model)

    def residual_projections(self) -> list[nn.Linear]:
        """The layers whose outputs are added to the residual stream."""
        return [self.attn.out_proj, self.ff.fc2]

    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> EncoderBlock:
        """Copy the weights of a ``torch.nn.TransformerEncoderLayer``."""
        if layer.norm_first != self.pre_ln:
            raise ValueError(
                f"norm_first={layer.norm_first} in the torch layer but "
                f"pre_ln={self.pre_ln} here"
            )
        if _torch_activation(layer) != self.ff.activation:
            raise ValueError(
                f"activation mismatch: torch layer uses {_torch_activation(layer)!r}, "
                f"this block {self.ff.activation!r}"
            )
        self.attn.load_from_torch(layer.self_attn)
        copy_linear(self.ff.fc1, layer.linear1)
        copy_linear(self.ff.fc2, layer.linear2)
        copy_norm(self.ln1, layer.norm1)
        copy_norm(self.ln2, layer.norm2)
        return self


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder, feed-forward.

    Each sub-layer has a residual connection and a LayerNorm, post-LN by default.
    x: (batch, tgt_len, d_model); memory: (batch, src_len, d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        *,
        pre_ln: bool = False,
        bias: bool = True,
        activation: str = "gelu",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.pre_ln = pre_ln
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=bias)
        self.ln1 = LayerNorm(d_model, eps, bias)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, bias=bias)
        self.ln2 = LayerNorm(d_model, eps, bias)
        self.ff = FeedForward(d_model, d_ff, dropout, bias, activation)
        self.ln3 = LayerNorm(d_model, eps, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """tgt_mask: extra mask on the (always causal) self-attention, e.g. padding;
        memory_mask: which encoder positions may be attended, e.g. a
        ``padding_mask`` of the source. Both bool, True = may attend.

        With ``return_weights`` also returns the cross-attention weights
        (batch, n_heads, tgt_len, src_len).
        """
        weights = []

        def self_attn(h: Tensor) -> Tensor:
            return self.self_attn(h, mask=tgt_mask, is_causal=True)

        def cross_attn(h: Tensor) -> Tensor:
            out, w = self.cross_attn(
                h, memory, memory, mask=memory_mask, return_weights=True
            )
            weights.append(w)
            return out

        if self.pre_ln:
            x = x + self.dropout(self_attn(self.ln1(x)))
            x = x + self.dropout(cross_attn(self.ln2(x)))
            x = x + self.dropout(self.ff(self.ln3(x)))  # (batch, tgt_len, d_model)
        else:
            x = self.ln1(x + self.dropout(self_attn(x)))
            x = self.ln2(x + self.dropout(cross_attn(x)))
            x = self.ln3(x + self.dropout(self.ff(x)))  # (batch, tgt_len, d_model)
        return (x, weights[0]) if return_weights else x

    def residual_projections(self) -> list[nn.Linear]:
        """The layers whose outputs are added to the residual stream."""
        return [self.self_attn.out_proj, self.cross_attn.out_proj, self.ff.fc2]

    def load_from_torch(self, layer: nn.TransformerDecoderLayer) -> DecoderBlock:
        """Copy the weights of a ``torch.nn.TransformerDecoderLayer``."""
        if layer.norm_first != self.pre_ln:
            raise ValueError(
                f"norm_first={layer.norm_first} in the torch layer but "
                f"pre_ln={self.pre_ln} here"
            )
        self.self_attn.load_from_torch(layer.self_attn)
        self.cross_attn.load_from_torch(layer.multihead_attn)
        copy_linear(self.ff.fc1, layer.linear1)
        copy_linear(self.ff.fc2, layer.linear2)
        for ours, theirs in ((self.ln1, layer.norm1), (self.ln2, layer.norm2)):
            copy_norm(ours, theirs)
        copy_norm(self.ln3, layer.norm3)
        return self


class GPTBlock(nn.Module):
    """A GPT-2 block: pre-LN causal self-attention and feed-forward (tanh GELU).

    ``x = x + Drop(SelfAttn(LN1(x)))``; ``x = x + Drop(FFN(LN2(x)))``, with the
    self-attention always causal. x: (batch, seq, d_model) -> same shape.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        *,
        bias: bool = True,
        eps: float = 1e-5,
        fused: bool = False,
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.attn = MultiHeadAttention(d_model, n_heads, bias=bias, fused=fused)
        self.ln1 = LayerNorm(d_model, eps, bias)
        self.ff = FeedForward(d_model, d_ff, dropout, bias, "gelu_tanh")
        self.ln2 = LayerNorm(d_model, eps, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        extend_kv: KVExtender | None = None,
        return_weights: bool = False,
        fused: bool | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """mask: optional extra bool mask (e.g. padding) on top of the causal one.

        ``extend_kv`` (used by :meth:`llmbook.model.GPT.forward`) receives this
        block's new keys and values (batch, n_heads, seq, d_head) and returns the
        keys and values to attend to, earlier positions first (a KV cache, a learned
        prefix); the mask then covers all of them: (..., seq, n_keys). With
        ``return_weights`` also returns the attention weights (batch, n_heads, seq,
        n_keys), computed with the written-out attention. ``fused`` overrides the
        attention's choice of kernel (None: keep it).
        """
        attn = self.attn
        q, k, v = attn.project(self.ln1(x))  # (batch, n_heads, seq, d_head)
        causal = True
        if extend_kv is not None:
            k, v = extend_kv(k, v)  # (batch, n_heads, n_keys, d_head)
            causal = q.shape[2] > 1  # one new query is the last: it sees every key
        out = attn.attend(
            q, k, v, mask, is_causal=causal, return_weights=return_weights, fused=fused
        )
        a, weights = out if return_weights else (out, None)
        x = x + (self.dropout(a) if self.training else a)  # eval: skip the call
        f = self.ff(self.ln2(x))
        x = x + (self.dropout(f) if self.training else f)  # (batch, seq, d_model)
        return (x, weights) if return_weights else x

    def residual_projections(self) -> list[nn.Linear]:
        """The layers whose outputs are added to the residual stream."""
        return [self.attn.out_proj, self.ff.fc2]
