"""The decoder-only Transformer the course trains (Chapter 4; trained in Chapter 5).

``GPTConfig`` (validated sizes), ``GPT`` (GPT-2's architecture, with
``GPT.from_hf_gpt2`` and ``load_hf_gpt2_weights``), ``count_parameters`` (closed
form) and ``model_flops_per_token`` (the matmul FLOPs a training or inference token
costs). Generating text is :func:`llmbook.decoding.generate` (Chapter 6): the model
computes logits and knows nothing of decoding, so ``llmbook.model`` imports no layer
above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llmbook.model.blocks import GPTBlock
from llmbook.model.init import init_gpt2_
from llmbook.model.layers import LayerNorm, copy_norm
from llmbook.model.validation import check_ids, check_sizes

__all__ = [
    "GPTConfig",
    "GPT",
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

    def forward(self, idx: Tensor) -> Tensor:
        cfg = self.config
        check_ids("idx", idx, cfg.vocab_size, cfg.context_length)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.dropout(self.tok_emb(idx) + self.pos_emb(pos))  # (batch, seq, d_model)
        for block in self.blocks:
            x = block(x)  # (batch, seq, d_model)
        return self.lm_head(self.ln_f(x))  # (batch, seq, vocab_size)

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
