"""The decoder-only Transformer the course trains (Chapter 4; trained in Chapter 5).

``GPTConfig`` (validated sizes), ``GPT`` (GPT-2's architecture, with
``GPT.from_hf_gpt2`` and ``load_hf_gpt2_weights``), ``count_parameters`` (closed
form) and ``model_flops_per_token`` (the matmul FLOPs a training or inference token
costs). Generating text is :func:`llmbook.decoding.generate` (Chapter 6): the model
computes logits and knows nothing of decoding, so ``llmbook.model`` imports no layer
above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
from torch import Tensor, nn

from llmbook.model.attention import causal_mask
from llmbook.model.blocks import GPTBlock, KVExtender
from llmbook.model.init import init_gpt2_
from llmbook.model.layers import LayerNorm, copy_norm
from llmbook.model.validation import check_ids, check_sizes

__all__ = [
    "GPTConfig",
    "GPT",
    "GPTOutput",
    "KVCacheLike",
    "PastKeyValues",
    "count_parameters",
    "model_flops_per_token",
    "load_hf_gpt2_weights",
]


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
        check_sizes(self)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class KVCacheLike(Protocol):
    """A key-value cache that :meth:`GPT.forward` updates in place (the course's is
    :class:`llmbook.decoding.KVCache`): ``length`` cached positions, and
    ``append(layer, k, v)`` stores the new (batch, n_heads, n_new, d_head) keys and
    values of ``layer`` after them and returns all of that layer's keys and values."""

    length: int

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


# one (keys, values) pair per layer, each (batch or 1, n_heads, n_past, d_head)
PastKeyValues = Sequence[tuple[Tensor, Tensor]]


@dataclass
class GPTOutput:
    """What :meth:`GPT.forward` returns when more than the logits is asked for.

    ``logits`` (batch, seq, vocab); ``past_key_values`` (with ``use_cache``);
    ``hidden_states``: ``n_layers + 1`` residual streams (batch, seq, d_model);
    ``attentions``: ``n_layers`` weights (batch, n_heads, seq, n_past + seq).
    """

    logits: Tensor
    past_key_values: KVCacheLike | PastKeyValues | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


def _past_length(past: KVCacheLike | PastKeyValues | None, n_layers: int) -> int:
    if past is None:
        return 0
    if not isinstance(past, (tuple, list)):
        return past.length
    if len(past) != n_layers:
        raise ValueError(
            f"past_key_values must hold one (keys, values) pair per layer "
            f"({n_layers}), got {len(past)}"
        )
    return past[0][0].shape[-2] if n_layers else 0


def _kv_extender(
    past: KVCacheLike | PastKeyValues | None,
    layer: int,
    in_place: bool,
    use_cache: bool,
    presents: list[tuple[Tensor, Tensor]],
) -> KVExtender | None:
    """How block ``layer`` gets its keys and values: appended to a cache in place,
    or the past pair concatenated in front (and kept in ``presents`` when
    ``use_cache``)."""
    if in_place:
        return partial(past.append, layer)
    if past is None and not use_cache:
        return None

    def extend(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if past is not None:
            k_past, v_past = past[layer]
            batch = k.shape[0]
            k = torch.cat([k_past.expand(batch, -1, -1, -1), k], dim=2)
            v = torch.cat([v_past.expand(batch, -1, -1, -1), v], dim=2)
        if use_cache:
            presents.append((k, v))
        return k, v

    return extend


class GPT(nn.Module):
    """Decoder-only Transformer language model (GPT-2's architecture).

    Token embeddings plus learned position embeddings, ``n_layers`` pre-LN causal
    blocks, a final LayerNorm, and an LM head whose weight is the token embedding
    matrix (tied). ``forward(idx)``: (batch, seq) ids -> logits (batch, seq, vocab);
    its keyword-only hooks (a KV cache or learned prefix, input embeddings, position
    ids, a padding mask, hidden states and attentions) serve decoding, batching,
    parameter-efficient fine-tuning, export and attribution, so that no other module
    runs the blocks itself.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            GPTBlock(
                config.d_model,
                config.n_heads,
                config.d_ff,
                config.dropout,
                bias=config.bias,
                eps=config.layer_norm_eps,
                fused=config.fused_attention,
            )
            for _ in range(config.n_layers)
        )
        self.ln_f = LayerNorm(config.d_model, config.layer_norm_eps, config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying
        init_gpt2_(self)

    def forward(
        self,
        idx: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        past_key_values: KVCacheLike | PastKeyValues | None = None,
        position_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        use_cache: bool = False,
    ) -> Tensor | GPTOutput:
        """Logits (batch, seq, vocab) of ``idx`` (batch, seq), or a :class:`GPTOutput`
        when hidden states, attentions or the cache are asked for.

        The keywords are the hooks later chapters need (named as in Hugging Face's
        ``GPT2Model.forward``):

        * ``inputs_embeds`` (batch, seq, d_model): token embeddings to use instead of
          ``idx`` (prompt tuning, attributions); positions are still added;
        * ``past_key_values``: keys and values of earlier positions, either a cache
          with ``length`` and ``append(layer, k, v)`` (a
          :class:`llmbook.decoding.KVCache`, updated in place), or one (keys, values)
          pair per layer, each (batch or 1, n_heads, n_past, d_head) (a learned
          prefix). The new tokens follow them and attend to all of them;
        * ``position_ids`` (seq,) or (batch, seq): defaults to ``n_past ..
          n_past + seq - 1``;
        * ``attention_mask`` (batch, n_past + seq), 1/True on real tokens, 0/False
          on padding: no query attends to a padding key. A query with no real key to
          see (a left pad) attends to itself, so that no row is empty;
        * ``output_hidden_states``: the ``n_layers + 1`` residual streams (after the
          embeddings, then after each block; the final LayerNorm is not applied);
        * ``output_attentions``: every layer's weights (batch, n_heads, seq, n_keys),
          computed with the written-out attention. Otherwise the config's
          ``fused_attention`` picks the kernel, except that a cache object (only
          inference uses one) always gets PyTorch's fused kernel;
        * ``use_cache``: return the keys and values including the new positions (the
          cache object itself, or a new tuple of per-layer pairs).
        """
        in_place = past_key_values is not None and not isinstance(
            past_key_values, (tuple, list)
        )  # a cache object, updated in place
        x, past_len = self._embed(idx, inputs_embeds, past_key_values, position_ids)
        batch, seq, _ = x.shape
        mask = self._key_mask(attention_mask, batch, seq, past_len, x.device)
        presents: list[tuple[Tensor, Tensor]] = []
        states: list[Tensor] = []
        attentions: list[Tensor] = []
        for layer, block in enumerate(self.blocks):
            if output_hidden_states:
                states.append(x)
            extend = _kv_extender(past_key_values, layer, in_place, use_cache, presents)
            if output_attentions:
                x, weights = block(x, mask, extend_kv=extend, return_weights=True)
                attentions.append(weights)
            else:  # decoding with a cache always takes the fused kernel (faster)
                x = block(x, mask, extend_kv=extend, fused=in_place or None)
        logits = self.lm_head(self.ln_f(x))  # (batch, seq, vocab_size)
        if in_place:
            past_key_values.length = past_len + seq
        if not (output_hidden_states or output_attentions or use_cache):
            return logits
        cache: KVCacheLike | PastKeyValues | None = None
        if use_cache:
            cache = past_key_values if in_place else tuple(presents)
        return GPTOutput(
            logits=logits,
            past_key_values=cache,
            hidden_states=tuple(states + [x]) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def _embed(
        self,
        idx: Tensor | None,
        inputs_embeds: Tensor | None,
        past: KVCacheLike | PastKeyValues | None,
        position_ids: Tensor | None,
    ) -> tuple[Tensor, int]:
        """Token plus position embeddings (batch, seq, d_model), after dropout, and
        the number of past positions."""
        cfg = self.config
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx and inputs_embeds")
        if idx is not None:
            check_ids("idx", idx, cfg.vocab_size, cfg.context_length)
            tok, seq = self.tok_emb(idx), idx.shape[1]
        else:
            tok = inputs_embeds
            if (
                not isinstance(tok, Tensor)
                or not tok.is_floating_point()
                or tok.dim() != 3
                or tok.shape[-1] != cfg.d_model
            ):
                got = tuple(tok.shape) if isinstance(tok, Tensor) else type(tok)
                raise ValueError(
                    "inputs_embeds must be a float tensor (batch, seq, "
                    f"{cfg.d_model}), got {got}"
                )
            seq = tok.shape[1]
        past_len = _past_length(past, cfg.n_layers)
        if past_len + seq > cfg.context_length:
            raise ValueError(
                f"{past_len} past + {seq} new positions exceed context_length="
                f"{cfg.context_length}"
            )
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + seq, device=tok.device)
        elif position_ids.shape[-1] != seq:
            raise ValueError(
                f"position_ids must end in a dim of {seq} (one per new token), got "
                f"shape {tuple(position_ids.shape)}"
            )
        x = tok + self.pos_emb(position_ids)  # (batch, seq, d_model)
        return (self.dropout(x) if self.training else x), past_len

    @staticmethod
    def _key_mask(
        attention_mask: Tensor | None,
        batch: int,
        seq: int,
        past_len: int,
        device: torch.device,
    ) -> Tensor | None:
        """(batch, 1, seq, past_len + seq) bool, True = may attend: causal, no
        padding key, and a query that would see nothing sees itself."""
        if attention_mask is None:
            return None
        total = past_len + seq
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != (
            batch,
            total,
        ):
            got = (
                tuple(attention_mask.shape)
                if isinstance(attention_mask, Tensor)
                else type(attention_mask).__name__
            )
            raise ValueError(
                f"attention_mask must be (batch, past + seq) = ({batch}, {total}), "
                f"1 = token, 0 = padding; got {got}"
            )
        causal = causal_mask(seq, total, device=device)  # (seq, total)
        mask = causal & attention_mask.to(device=device, dtype=torch.bool)[:, None, :]
        q_pos = torch.arange(past_len, total, device=device)[:, None]
        itself = q_pos == torch.arange(total, device=device)  # (seq, total)
        mask = mask | (itself & ~mask.any(dim=-1, keepdim=True))
        return mask[:, None]  # (batch, 1, seq, total): the same for every head

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


def model_flops_per_token(config: GPTConfig, training: bool = True) -> int:
    """Matmul FLOPs per token of ``GPT(config)`` (the PaLM paper's accounting).

    Forward: 2 FLOPs per weight of every matmul (the blocks and the LM head; the
    embedding lookups are not matmuls) plus ``4 * n_layers * context_length *
    d_model`` for attention's two (seq x seq) products, averaged over the positions
    as if every query saw the whole context. Training is 3x forward (backward costs
    twice the forward).
    """
    d, n_layers = config.d_model, config.n_layers
    per_block = 4 * d * d + 2 * d * config.d_ff  # q, k, v, out + two FFN matrices
    matmul_weights = n_layers * per_block + config.vocab_size * d  # + LM head
    forward = 2 * matmul_weights + 4 * n_layers * config.context_length * d
    return 3 * forward if training else forward


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
        copy_norm(block.ln1, h.ln_1)
        copy_norm(block.ln2, h.ln_2)
        w_q, w_k, w_v = h.attn.c_attn.weight.split(cfg.d_model, dim=1)
        b_q, b_k, b_v = h.attn.c_attn.bias.split(cfg.d_model)
        copy_conv1d(block.attn.q_proj, w_q, b_q)
        copy_conv1d(block.attn.k_proj, w_k, b_k)
        copy_conv1d(block.attn.v_proj, w_v, b_v)
        copy_conv1d(block.attn.out_proj, h.attn.c_proj.weight, h.attn.c_proj.bias)
        copy_conv1d(block.ff.fc1, h.mlp.c_fc.weight, h.mlp.c_fc.bias)
        copy_conv1d(block.ff.fc2, h.mlp.c_proj.weight, h.mlp.c_proj.bias)
    copy_norm(model.ln_f, hf.ln_f)
    return model
