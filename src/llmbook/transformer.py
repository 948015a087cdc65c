"""The Transformer, built from scratch (Chapter 4).

Every class and function here is the package copy of code that Chapter 4 writes
inline; ``tests/test_chapter04.py`` checks the two agree, and
``tests/test_transformer.py`` checks this file against ``torch.nn.LayerNorm``,
``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` and Hugging Face's
``GPT2LMHeadModel``.

Contents:

* ``GPTConfig``: the size of a decoder-only model, validated;
* building blocks: ``LayerNorm``, ``FeedForward``, ``sinusoidal_positions``,
  ``apply_rope``;
* blocks: ``EncoderBlock`` (post-LN by default, ``pre_ln=True`` for pre-LN),
  ``DecoderBlock`` (causal self-attention, cross-attention, feed-forward);
* models: ``EncoderDecoder`` (the original Transformer, small) and ``GPT`` (the
  decoder-only model the course trains later), with ``GPT.from_hf_gpt2``;
* ``count_parameters(config)``: the closed-form parameter count of ``GPT``;
* initialisation: ``xavier_uniform_``, ``he_normal_`` and ``init_gpt2_``.

Masks follow ``llmbook.attention``: boolean, True = may attend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Multi-head attention was built in Chapter 3 (llmbook.attention).
from llmbook.attention import MultiHeadAttention

__all__ = [
    "GPTConfig",
    "LayerNorm",
    "FeedForward",
    "sinusoidal_positions",
    "apply_rope",
    "EncoderBlock",
    "DecoderBlock",
    "GPTBlock",
    "EncoderDecoder",
    "GPT",
    "load_hf_gpt2_weights",
    "count_parameters",
    "xavier_uniform_",
    "he_normal_",
    "init_gpt2_",
]

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclass
class GPTConfig:
    """Hyper-parameters of a decoder-only Transformer (``GPT``).

    ``d_ff`` defaults to ``4 * d_model``; ``bias`` switches the biases of every
    linear layer and LayerNorm; ``dropout`` is used after embeddings, attention
    outputs and feed-forward outputs. ``fused_attention`` runs attention with
    PyTorch's fused kernel (same result, faster; see ``MultiHeadAttention``).
    """

    vocab_size: int = 100
    context_length: int = 64
    d_model: int = 48
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int | None = None
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5
    fused_attention: bool = False

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        for name in ("vocab_size", "context_length", "d_model", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_layers", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads "
                f"({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


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
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


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
        return self.fc2(self.dropout(h))  # (..., d_model)


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


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------


@torch.no_grad()
def _copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    ours.weight.copy_(theirs.weight)
    if ours.bias is not None and theirs.bias is not None:
        ours.bias.copy_(theirs.bias)


@torch.no_grad()
def _copy_norm(ours: LayerNorm, theirs: nn.LayerNorm) -> None:
    ours.weight.copy_(theirs.weight)
    if ours.bias is not None and theirs.bias is not None:
        ours.bias.copy_(theirs.bias)
    ours.eps = theirs.eps


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
        _copy_linear(self.ff.fc1, layer.linear1)
        _copy_linear(self.ff.fc2, layer.linear2)
        _copy_norm(self.ln1, layer.norm1)
        _copy_norm(self.ln2, layer.norm2)
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

    def load_from_torch(self, layer: nn.TransformerDecoderLayer) -> DecoderBlock:
        """Copy the weights of a ``torch.nn.TransformerDecoderLayer``."""
        if layer.norm_first != self.pre_ln:
            raise ValueError(
                f"norm_first={layer.norm_first} in the torch layer but "
                f"pre_ln={self.pre_ln} here"
            )
        self.self_attn.load_from_torch(layer.self_attn)
        self.cross_attn.load_from_torch(layer.multihead_attn)
        _copy_linear(self.ff.fc1, layer.linear1)
        _copy_linear(self.ff.fc2, layer.linear2)
        for ours, theirs in ((self.ln1, layer.norm1), (self.ln2, layer.norm2)):
            _copy_norm(ours, theirs)
        _copy_norm(self.ln3, layer.norm3)
        return self


class GPTBlock(EncoderBlock):
    """A GPT block: a pre-LN ``EncoderBlock`` whose self-attention is causal."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(
            config.d_model,
            config.n_heads,
            config.d_ff,
            config.dropout,
            pre_ln=True,
            bias=config.bias,
            activation="gelu_tanh",
            eps=config.layer_norm_eps,
            fused=config.fused_attention,
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x, mask, is_causal=True)  # (batch, seq, d_model)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def _check_ids(name: str, idx: Tensor, vocab_size: int, max_len: int) -> None:
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int32, torch.int64):
        got = idx.dtype if isinstance(idx, Tensor) else type(idx).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids, got {got}")
    if idx.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seq), got {tuple(idx.shape)}")
    if idx.shape[1] > max_len:
        raise ValueError(
            f"{name} has length {idx.shape[1]}, longer than context_length={max_len}"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size):
        raise ValueError(
            f"{name} holds ids in [{int(idx.min())}, {int(idx.max())}], outside "
            f"the vocabulary [0, {vocab_size})"
        )


class EncoderDecoder(nn.Module):
    """The original encoder-decoder Transformer, small.

    Token embeddings (scaled by sqrt(d_model)) plus fixed sinusoidal positions feed an
    encoder stack and a decoder stack; a linear layer maps the decoder's output to
    target-vocabulary logits. Post-LN by default; with ``pre_ln=True`` a final
    LayerNorm closes each stack.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int | None = None,
        context_length: int = 128,
        dropout: float = 0.0,
        *,
        pre_ln: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        self.d_model, self.context_length = d_model, context_length
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        kw = dict(pre_ln=pre_ln, activation=activation)
        self.src_emb = nn.Embedding(src_vocab_size, d_model)
        self.tgt_emb = nn.Embedding(tgt_vocab_size, d_model)
        self.register_buffer(
            "pos", sinusoidal_positions(context_length, d_model), persistent=False
        )
        self.encoder = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, dropout, **kw) for _ in range(n_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout, **kw) for _ in range(n_layers)
        )
        self.enc_norm = LayerNorm(d_model) if pre_ln else nn.Identity()
        self.dec_norm = LayerNorm(d_model) if pre_ln else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, tgt_vocab_size)

    def _embed(self, emb: nn.Embedding, ids: Tensor) -> Tensor:
        x = emb(ids) * math.sqrt(self.d_model)  # (batch, seq, d_model)
        return self.dropout(x + self.pos[: ids.shape[1]])

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src: (batch, src_len) ids -> memory (batch, src_len, d_model)."""
        _check_ids("src", src, self.src_vocab_size, self.context_length)
        x = self._embed(self.src_emb, src)
        for block in self.encoder:
            x = block(x, src_mask)
        return self.enc_norm(x)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """tgt: (batch, tgt_len) ids -> logits (batch, tgt_len, tgt_vocab_size)."""
        _check_ids("tgt", tgt, self.tgt_vocab_size, self.context_length)
        x = self._embed(self.tgt_emb, tgt)
        for block in self.decoder:
            x = block(x, memory, tgt_mask, src_mask)
        return self.out(self.dec_norm(x))

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: logits for every target position, (batch, tgt_len, V)."""
        return self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask)

    @torch.no_grad()
    def greedy_decode(
        self, src: Tensor, bos_id: int, max_len: int, src_mask: Tensor | None = None
    ) -> Tensor:
        """Encode once, then append the most likely token, one step at a time.

        Returns (batch, max_len) ids starting with ``bos_id``.
        """
        memory = self.encode(src, src_mask)
        out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        for _ in range(max_len - 1):
            logits = self.decode(out, memory, src_mask)[:, -1]  # (batch, V)
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        return out


class GPT(nn.Module):
    """Decoder-only Transformer language model (GPT-2's architecture).

    Token embeddings plus learned position embeddings, ``n_layers`` pre-LN causal
    blocks, a final LayerNorm, and an LM head whose weight is the token embedding
    matrix (tied). ``forward(idx)``: (batch, seq) ids -> logits (batch, seq, vocab).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(config) for _ in range(config.n_layers))
        self.ln_f = LayerNorm(config.d_model, config.layer_norm_eps, config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying
        init_gpt2_(self)

    def forward(self, idx: Tensor) -> Tensor:
        cfg = self.config
        _check_ids("idx", idx, cfg.vocab_size, cfg.context_length)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.dropout(self.tok_emb(idx) + self.pos_emb(pos))  # (batch, seq, d_model)
        for block in self.blocks:
            x = block(x)  # (batch, seq, d_model)
        return self.lm_head(self.ln_f(x))  # (batch, seq, vocab_size)

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (batch, seq).

        Each step feeds the last ``context_length`` tokens, divides the final logits
        by ``temperature`` (0 means greedy: always the most likely token), keeps the
        ``top_k`` largest if given, and samples from the softmax.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.context_length :])[:, -1]  # (batch, V)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[
                        :, -1:
                    ]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)  # (batch, seq + 1)
        self.train(was_training)
        return idx

    @classmethod
    def from_hf_gpt2(cls, hf_model: nn.Module) -> GPT:
        """A ``GPT`` holding the weights of a Hugging Face ``GPT2LMHeadModel``.

        HF's GPT-2 uses ``Conv1D`` layers, which store weights as (in, out), the
        transpose of ``nn.Linear``'s (out, in); and its ``c_attn`` stacks W^Q, W^K,
        W^V along the output dim. Both are undone here.
        """
        hf_cfg = hf_model.config
        if hf_cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(
                f"only GPT-2's tanh GELU is supported, got {hf_cfg.activation_function!r}"
            )
        if getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False) or not getattr(
            hf_cfg, "scale_attn_weights", True
        ):
            raise ValueError("only the standard 1/sqrt(d_head) attention scaling")
        config = GPTConfig(
            vocab_size=hf_cfg.vocab_size,
            context_length=hf_cfg.n_positions,
            d_model=hf_cfg.n_embd,
            n_heads=hf_cfg.n_head,
            n_layers=hf_cfg.n_layer,
            d_ff=hf_cfg.n_inner or 4 * hf_cfg.n_embd,
            dropout=0.0,
            bias=True,
            layer_norm_eps=hf_cfg.layer_norm_epsilon,
        )
        model = cls(config)
        load_hf_gpt2_weights(model, hf_model)
        return model


@torch.no_grad()
def load_hf_gpt2_weights(model: GPT, hf_model: nn.Module) -> GPT:
    """Copy a Hugging Face ``GPT2LMHeadModel``'s weights into ``model`` (in place)."""
    hf = hf_model.transformer
    cfg = model.config
    if len(hf.h) != cfg.n_layers or hf.wte.weight.shape != model.tok_emb.weight.shape:
        raise ValueError(
            f"size mismatch: HF model has {len(hf.h)} layers and embeddings "
            f"{tuple(hf.wte.weight.shape)}; ours {cfg.n_layers} and "
            f"{tuple(model.tok_emb.weight.shape)}"
        )
    model.tok_emb.weight.copy_(hf.wte.weight)
    model.pos_emb.weight.copy_(hf.wpe.weight)

    def copy_conv1d(ours: nn.Linear, weight: Tensor, bias: Tensor) -> None:
        ours.weight.copy_(weight.T)  # Conv1D is (in, out); Linear is (out, in)
        ours.bias.copy_(bias)

    for block, h in zip(model.blocks, hf.h, strict=True):
        _copy_norm(block.ln1, h.ln_1)
        _copy_norm(block.ln2, h.ln_2)
        w_q, w_k, w_v = h.attn.c_attn.weight.split(cfg.d_model, dim=1)
        b_q, b_k, b_v = h.attn.c_attn.bias.split(cfg.d_model)
        copy_conv1d(block.attn.q_proj, w_q, b_q)
        copy_conv1d(block.attn.k_proj, w_k, b_k)
        copy_conv1d(block.attn.v_proj, w_v, b_v)
        copy_conv1d(block.attn.out_proj, h.attn.c_proj.weight, h.attn.c_proj.bias)
        copy_conv1d(block.ff.fc1, h.mlp.c_fc.weight, h.mlp.c_fc.bias)
        copy_conv1d(block.ff.fc2, h.mlp.c_proj.weight, h.mlp.c_proj.bias)
    _copy_norm(model.ln_f, hf.ln_f)
    return model


def count_parameters(config: GPTConfig) -> int:
    """The number of distinct parameters of ``GPT(config)``, in closed form.

    With V = vocab_size, T = context_length, d = d_model, f = d_ff, L = n_layers and
    b = 1 if bias else 0::

        embeddings   V d + T d          (the LM head is tied: no extra parameters)
        per block    4 d^2 + 4 b d      attention (W^Q, W^K, W^V, W^O)
                     2 d f + b (f + d)  feed-forward
                     2 (1 + b) d        two LayerNorms
        final LN     (1 + b) d
    """
    V, T, d, L = (
        config.vocab_size,
        config.context_length,
        config.d_model,
        config.n_layers,
    )
    f, b = config.d_ff, int(config.bias)
    assert f is not None  # set by GPTConfig.__post_init__
    per_block = 4 * d * d + 4 * b * d + 2 * d * f + b * (f + d) + 2 * (1 + b) * d
    return V * d + T * d + L * per_block + (1 + b) * d


# --------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------


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
def init_gpt2_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """GPT-2's initialisation, in place.

    Linear and embedding weights ~ N(0, 0.02^2), biases 0, LayerNorm weights 1; the
    projections that write into the residual stream (attention ``out_proj`` and
    feed-forward ``fc2``) get std ``0.02 / sqrt(2 * n_layers)``, because each block
    adds two such terms to the stream and their variances add up.
    """
    n_layers = max(1, sum(isinstance(m, EncoderBlock) for m in model.modules()))
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, LayerNorm):
            module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
    for module in model.modules():
        if isinstance(module, EncoderBlock):
            for proj in (module.attn.out_proj, module.ff.fc2):
                proj.weight.normal_(0.0, std / math.sqrt(2 * n_layers))
    return model
