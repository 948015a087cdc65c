"""Attention, built from scratch (Chapter 3).

Every function here is the package copy of code that Chapter 3 writes inline; the
chapter's tests check the two agree, and ``tests/unit/model/test_attention.py`` checks this file
against ``torch.nn.functional.scaled_dot_product_attention`` and
``torch.nn.MultiheadAttention``.

Conventions used throughout the course:

* shapes are ``(..., n_q, d)`` for queries and ``(..., n_k, d)`` for keys/values, where
  ``...`` is any number of batch (and head) dimensions;
* a **mask is boolean and True means "may attend"**, the same convention as
  ``scaled_dot_product_attention``. (``nn.MultiheadAttention``'s ``key_padding_mask``
  uses the opposite convention: True there means "ignore".)
* a query row whose keys are *all* masked gets zero weights (and a zero output) instead
  of the NaNs a naive softmax would produce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "dot_product_scores",
    "scaled_dot_product_scores",
    "AdditiveScore",
    "masked_softmax",
    "causal_mask",
    "padding_mask",
    "scaled_dot_product_attention",
    "split_heads",
    "merge_heads",
    "MultiHeadAttention",
]


def _check_float(name: str, x: Tensor, min_dim: int = 2) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dims (..., seq, dim), "
            f"got shape {tuple(x.shape)}"
        )


def _check_qk(q: Tensor, k: Tensor) -> None:
    _check_float("q", q)
    _check_float("k", k)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the last dim: got {q.shape[-1]} and {k.shape[-1]} "
            f"(q {tuple(q.shape)}, k {tuple(k.shape)})"
        )


def dot_product_scores(q: Tensor, k: Tensor) -> Tensor:
    """Raw dot-product scores ``e_ij = q_i . k_j``.

    q: (..., n_q, d), k: (..., n_k, d) -> (..., n_q, n_k).
    """
    _check_qk(q, k)
    return q @ k.transpose(-2, -1)


def scaled_dot_product_scores(q: Tensor, k: Tensor) -> Tensor:
    """Scores divided by sqrt(d): keeps their variance near 1 whatever d is.

    q: (..., n_q, d), k: (..., n_k, d) -> (..., n_q, n_k).
    """
    return dot_product_scores(q, k) / math.sqrt(q.shape[-1])


class AdditiveScore(nn.Module):
    """Additive (Bahdanau) scoring: ``e_ij = v . tanh(W_q q_i + W_k k_j)``.

    Unlike the dot product, q and k may have different sizes (d_q and d_k).
    """

    def __init__(self, d_q: int, d_k: int, d_hidden: int) -> None:
        super().__init__()
        self.w_q = nn.Linear(d_q, d_hidden, bias=False)
        self.w_k = nn.Linear(d_k, d_hidden, bias=False)
        self.v = nn.Linear(d_hidden, 1, bias=False)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """q: (..., n_q, d_q), k: (..., n_k, d_k) -> scores (..., n_q, n_k)."""
        _check_float("q", q)
        _check_float("k", k)
        if q.shape[-1] != self.w_q.in_features or k.shape[-1] != self.w_k.in_features:
            raise ValueError(
                f"AdditiveScore expects q (..., n_q, {self.w_q.in_features}) and "
                f"k (..., n_k, {self.w_k.in_features}); got q {tuple(q.shape)}, "
                f"k {tuple(k.shape)}"
            )
        # (..., n_q, 1, h) + (..., 1, n_k, h) -> (..., n_q, n_k, h)
        hidden = torch.tanh(self.w_q(q).unsqueeze(-2) + self.w_k(k).unsqueeze(-3))
        return self.v(hidden).squeeze(-1)  # (..., n_q, n_k)


def _check_mask(mask: Tensor, scores: Tensor) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {got}")
    try:
        torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
            f"shape {tuple(scores.shape)} (..., n_q, n_k)"
        ) from None


def masked_softmax(scores: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` that ignores masked-out positions.

    Subtracts the row maximum before exponentiating, so large scores cannot overflow.
    Rows with every position masked come out as all zeros rather than NaN.

    scores: (..., n_q, n_k); mask: bool, broadcastable to scores, True = keep.
    """
    _check_float("scores", scores, min_dim=1)
    if mask is not None:
        _check_mask(mask, scores)
        scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(dim=dim, keepdim=True)
    # A fully masked row has max -inf; shift it by 0 instead so exp() gives zeros.
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    exp = torch.exp(scores - row_max)
    total = exp.sum(dim=dim, keepdim=True)
    return exp / torch.where(total == 0, torch.ones_like(total), total)


def causal_mask(
    n_q: int, n_k: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Lower-triangular bool mask, (n_q, n_k): query i may see keys j <= i.

    When n_k > n_q (queries are the *last* n_q positions, as when generating with a
    cache) the diagonal is shifted so the final query still sees every key.
    """
    n_k = n_q if n_k is None else n_k
    if n_q < 1 or n_k < 1:
        raise ValueError(f"causal_mask needs positive sizes, got n_q={n_q}, n_k={n_k}")
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)


def padding_mask(lengths_or_attention_mask: Tensor, n_k: int | None = None) -> Tensor:
    """Key-padding mask shaped to broadcast over scores: (batch, 1, 1, n_k).

    Accepts either a 1-D tensor of sequence lengths (then ``n_k`` is the padded length,
    default ``max(lengths)``), or a Hugging Face style ``attention_mask`` of shape
    (batch, n_k) with 1 for real tokens and 0 for padding. True = a real token.
    The two middle dims broadcast over heads and queries.
    """
    x = lengths_or_attention_mask
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 1:
        if x.is_floating_point():
            raise TypeError(f"lengths must be integers, got dtype {x.dtype}")
        if (x < 0).any():
            raise ValueError(f"lengths must be >= 0, got {x.tolist()}")
        n_k = int(x.max()) if n_k is None else n_k
        if int(x.max()) > n_k:
            raise ValueError(f"a length {int(x.max())} exceeds n_k={n_k}")
        keep = torch.arange(n_k, device=x.device) < x[:, None]  # (batch, n_k)
    elif x.dim() == 2:
        keep = x.bool()
    else:
        raise ValueError(
            "expected lengths (batch,) or an attention_mask (batch, n_k), "
            f"got shape {tuple(x.shape)}"
        )
    return keep[:, None, None, :]


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``softmax(q k^T / sqrt(d_k)) v``, written out.

    q: (..., n_q, d_k), k: (..., n_k, d_k), v: (..., n_k, d_v)
    mask: bool, broadcastable to (..., n_q, n_k), True = may attend.
    Returns the output (..., n_q, d_v), and the weights (..., n_q, n_k) when
    ``return_weights`` is True.
    """
    _check_qk(q, k)
    _check_float("v", v)
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of positions: got {k.shape[-2]} "
            f"and {v.shape[-2]} (k {tuple(k.shape)}, v {tuple(v.shape)})"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., n_q, n_k)
    if is_causal:
        causal = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        mask = causal if mask is None else mask & causal
    weights = masked_softmax(scores, mask)
    out = weights @ v  # (..., n_q, d_v)
    return (out, weights) if return_weights else out


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(batch, seq, n_heads * d_head) -> (batch, n_heads, seq, d_head): one slice of
    the model dimension per head (the package's only head-splitting code)."""
    batch, seq, d_model = x.shape
    return x.view(batch, seq, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(batch, n_heads, seq, d_head) -> (batch, seq, n_heads * d_head): the heads'
    outputs concatenated, the inverse of :func:`split_heads`."""
    batch, n_heads, seq, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, seq, n_heads * d_head)


def _fused_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool
) -> Tensor:
    """PyTorch's fused attention kernel; (batch, n_heads, n_q, d_head) out.

    Under CPU bf16 autocast the projections arrive in bf16, but PyTorch's CPU
    attention kernel is 2-3x slower in bf16 than in fp32 (forward + backward at
    the course GPT's shapes, torch 2.13 on an AVX512-BF16 CPU), so on the CPU the
    attention itself runs in fp32 and only the matmuls around it use bf16.
    """
    if torch.is_autocast_enabled("cpu") and q.device.type == "cpu":
        dtype = q.dtype
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, is_causal=is_causal
            )
        return out.to(dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: h heads of size d_model / h, run in parallel.

    ``head_i = Attention(x_q W_i^Q, x_kv W_i^K, x_kv W_i^V)`` and the heads are
    concatenated and mixed by ``W^O``. The per-head matrices are stored stacked in one
    ``nn.Linear`` each, which is the same computation as h small ones.

    ``fused=True`` computes the same attention with PyTorch's fused kernel
    (``torch.nn.functional.scaled_dot_product_attention``: FlashAttention or
    memory-efficient attention on a GPU, a fused loop on the CPU), which never stores
    the (n_q, n_k) weights. It is for training speed; a call that asks for the weights
    uses the written-out version. Rows whose mask allows no key are NaN in the fused
    kernel (zeros in ours), so keep at least one key per query.
    """

    def __init__(
        self, d_model: int, n_heads: int, bias: bool = True, *, fused: bool = False
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        self.d_model, self.n_heads = d_model, n_heads
        self.d_head = d_model // n_heads
        self.fused = fused
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Self-attention when only ``query`` is given; cross-attention otherwise.

        query: (batch, n_q, d_model); key/value: (batch, n_k, d_model);
        mask: bool, broadcastable to (batch, n_heads, n_q, n_k), True = may attend
        (a ``padding_mask(...)`` of shape (batch, 1, 1, n_k) fits).
        Returns (batch, n_q, d_model) and, if asked, the weights
        (batch, n_heads, n_q, n_k).
        """
        key = query if key is None else key
        value = key if value is None else value
        for name, x in (("query", query), ("key", key), ("value", value)):
            _check_float(name, x, min_dim=3)
            if x.dim() != 3 or x.shape[-1] != self.d_model:
                raise ValueError(
                    f"{name} must have shape (batch, seq, {self.d_model}), "
                    f"got {tuple(x.shape)}"
                )
        q, k, v = self.project(query, key, value)
        return self.attend(
            q, k, v, mask, is_causal=is_causal, return_weights=return_weights
        )

    def project(
        self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The queries, keys and values, split into heads: each (batch, n_heads,
        seq, d_head). ``key`` and ``value`` default to ``query`` (self-attention)."""
        key = query if key is None else key
        value = key if value is None else value
        return (
            split_heads(self.q_proj(query), self.n_heads),
            split_heads(self.k_proj(key), self.n_heads),
            split_heads(self.v_proj(value), self.n_heads),
        )

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        return_weights: bool = False,
        fused: bool | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attention over already projected heads, then W^O.

        q: (batch, n_heads, n_q, d_head); k, v: (batch, n_heads, n_k, d_head), e.g.
        cached keys followed by new ones (a causal query ``i`` is then position
        ``n_k - n_q + i``). Returns (batch, n_q, d_model) and, if asked, the weights
        (batch, n_heads, n_q, n_k). ``fused`` overrides the module's own choice of
        kernel (None: keep it); asking for the weights runs the written-out one.
        """
        fused = self.fused if fused is None else fused
        if fused and not return_weights:
            if is_causal and (mask is not None or q.shape[-2] != k.shape[-2]):
                # The kernel takes a mask or is_causal, not both, and its is_causal
                # aligns the diagonal top-left when n_q != n_k (ours: bottom-right).
                causal = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
                mask = causal if mask is None else mask & causal
                is_causal = False
            out = _fused_attention(q, k, v, mask, is_causal)
            weights = None
        else:
            out, weights = scaled_dot_product_attention(
                q, k, v, mask, is_causal=is_causal, return_weights=True
            )
        out = self.out_proj(merge_heads(out))  # (batch, n_q, d_model)
        return (out, weights) if return_weights else out

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` into this module.

        PyTorch stores W^Q, W^K, W^V stacked in one ``in_proj_weight`` of shape
        (3 * d_model, d_model); we split it into our three projections.
        """
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_heads:
            raise ValueError(
                f"shape mismatch: torch module has embed_dim={mha.embed_dim}, "
                f"num_heads={mha.num_heads}; ours has d_model={self.d_model}, "
                f"n_heads={self.n_heads}"
            )
        if mha.in_proj_weight is None:
            raise ValueError("only torch modules with kdim == vdim == embed_dim")
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)
        for proj, w in ((self.q_proj, w_q), (self.k_proj, w_k), (self.v_proj, w_v)):
            proj.weight.copy_(w)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None and self.q_proj.bias is not None:
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
            self.q_proj.bias.copy_(b_q)
            self.k_proj.bias.copy_(b_k)
            self.v_proj.bias.copy_(b_v)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self
