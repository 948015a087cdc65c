"""A BERT-style masked-language-model encoder (Chapters 5-7).

``EncoderConfig`` (validated sizes), ``MaskedLM`` (BERT's architecture),
``init_bert_`` (BERT's initialisation) and ``count_mlm_parameters`` (closed form).
Its training loss, BERT's 15 % masking with 80/10/10 and cross-entropy on the chosen
positions, is :func:`llmbook.train.objectives.mlm_loss` (the model does not import
the training code).

How ``MaskedLM`` maps onto Hugging Face's ``BertForMaskedLM``
(:func:`llmbook.model.hf.to_hf_bert` copies one into the other; the logits agree
within 1e-5, ``tests/unit/model/test_bert.py``)::

    ours                          BertForMaskedLM
    tok_emb                       bert.embeddings.word_embeddings
    pos_emb                       bert.embeddings.position_embeddings
    (none)                        bert.embeddings.token_type_embeddings (1 row, zeros)
    emb_ln                        bert.embeddings.LayerNorm
    blocks[i].attn.q/k/v_proj     bert.encoder.layer[i].attention.self.query/key/value
    blocks[i].attn.out_proj       bert.encoder.layer[i].attention.output.dense
    blocks[i].ln1                 bert.encoder.layer[i].attention.output.LayerNorm
    blocks[i].ff.fc1              bert.encoder.layer[i].intermediate.dense
    blocks[i].ff.fc2              bert.encoder.layer[i].output.dense
    blocks[i].ln2                 bert.encoder.layer[i].output.LayerNorm
    head_dense, head_ln           cls.predictions.transform.dense / .LayerNorm
    lm_head (weight = tok_emb)    cls.predictions.decoder (tied), bias = .bias

Differences from the original BERT: no segment (token-type) embeddings and no
next-sentence-prediction head or pooler, as in RoBERTa. Everything else is BERT:
post-LN blocks, exact (erf) GELU, LayerNorm epsilon 1e-12, an MLM head with its own
dense layer and LayerNorm, and an output layer tied to the token embedding with a
separate per-token bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmbook.model.attention import padding_mask
from llmbook.model.blocks import EncoderBlock
from llmbook.model.init import init_normal_
from llmbook.model.layers import LayerNorm
from llmbook.model.validation import check_ids, check_sizes

__all__ = [
    "EncoderConfig",
    "MaskedLM",
    "init_bert_",
    "count_mlm_parameters",
]


@dataclass
class EncoderConfig:
    """Hyper-parameters of a BERT-style encoder (``MaskedLM``).

    ``d_ff`` defaults to ``4 * d_model``; ``dropout`` is used after the embeddings,
    attention outputs and feed-forward outputs (BERT's ``hidden_dropout_prob``;
    attention weights are not dropped). ``layer_norm_eps`` is BERT's 1e-12.
    ``fused_attention`` runs attention with PyTorch's fused kernel (same result,
    faster; see ``MultiHeadAttention``).
    """

    vocab_size: int = 100
    context_length: int = 64
    d_model: int = 48
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int | None = None
    dropout: float = 0.0
    layer_norm_eps: float = 1e-12
    fused_attention: bool = False

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        check_sizes(self)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@torch.no_grad()
def init_bert_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """BERT's initialisation, in place: every linear and embedding weight ~
    N(0, std^2), biases 0 (the MLM output bias included), LayerNorm weights 1.

    Unlike GPT-2's scheme (:func:`llmbook.model.init.init_gpt2_`) the residual
    projections are not scaled down: in a post-LN block the LayerNorm after each
    residual sum keeps the stream's scale fixed whatever the depth.
    """
    init_normal_(model, std)
    return model


class MaskedLM(nn.Module):
    """BERT-style Transformer encoder with a masked-language-model head.

    Token embeddings plus learned position embeddings, a LayerNorm and dropout,
    ``n_layers`` post-LN bidirectional ``EncoderBlock``s (exact GELU), then the MLM
    head: ``Linear(d_model, d_model)`` -> GELU -> LayerNorm -> a linear layer onto
    the vocabulary whose weight is the token embedding matrix (tied) and whose bias
    is its own. See the module docstring for the mapping onto ``BertForMaskedLM``.

    ``forward(idx, attention_mask=None)``: (batch, seq) ids and an optional
    (batch, seq) padding mask (1 = real token, 0 = padding, the Hugging Face
    convention) -> logits (batch, seq, vocab_size). ``encode`` returns the
    encoder's hidden states (batch, seq, d_model) instead, for classifiers.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.context_length, d)
        self.emb_ln = LayerNorm(d, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                d,
                config.n_heads,
                config.d_ff,
                config.dropout,
                pre_ln=False,
                activation="gelu",
                eps=config.layer_norm_eps,
                fused=config.fused_attention,
            )
            for _ in range(config.n_layers)
        )
        self.head_dense = nn.Linear(d, d)
        self.head_ln = LayerNorm(d, config.layer_norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=True)
        self.lm_head.weight = self.tok_emb.weight  # weight tying; the bias is its own
        init_bert_(self)

    def _key_mask(self, idx: Tensor, attention_mask: Tensor | None) -> Tensor | None:
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, Tensor):
            raise TypeError(
                "attention_mask must be a (batch, seq) tensor of 1s and 0s, got "
                f"{type(attention_mask).__name__}"
            )
        if attention_mask.shape != idx.shape:
            raise ValueError(
                f"attention_mask must have the shape of idx {tuple(idx.shape)} "
                f"(1 = token, 0 = padding), got {tuple(attention_mask.shape)}"
            )
        return padding_mask(attention_mask)  # (batch, 1, 1, seq), True = attend

    def encode(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Hidden states of the last block: (batch, seq) -> (batch, seq, d_model)."""
        cfg = self.config
        check_ids("idx", idx, cfg.vocab_size, cfg.context_length)
        mask = self._key_mask(idx, attention_mask)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (batch, seq, d_model)
        x = self.dropout(self.emb_ln(x))
        for block in self.blocks:
            x = block(x, mask)  # (batch, seq, d_model)
        return x

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x = self.encode(idx, attention_mask)  # (batch, seq, d_model)
        h = self.head_ln(F.gelu(self.head_dense(x)))  # (batch, seq, d_model)
        return self.lm_head(h)  # (batch, seq, vocab_size)


def count_mlm_parameters(config: EncoderConfig) -> int:
    """The number of distinct parameters of ``MaskedLM(config)``, in closed form.

    With V = vocab_size, T = context_length, d = d_model, f = d_ff, L = n_layers::

        embeddings   V d + T d + 2 d     (+ their LayerNorm)
        per block    4 d^2 + 4 d         attention (W^Q, W^K, W^V, W^O)
                     2 d f + f + d       feed-forward
                     4 d                 two LayerNorms
        MLM head     d^2 + d + 2 d + V   dense, LayerNorm, output bias (weight tied)

    ``BertForMaskedLM`` of the same sizes has ``d`` more: its one-row token-type
    embedding.
    """
    V, T, d, L = (
        config.vocab_size,
        config.context_length,
        config.d_model,
        config.n_layers,
    )
    f = config.d_ff
    assert f is not None  # set by EncoderConfig.__post_init__
    per_block = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
    return V * d + T * d + 2 * d + L * per_block + d * d + 3 * d + V
