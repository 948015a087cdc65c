"""The original encoder-decoder Transformer, small (Chapter 4; Chapter 9 trains one)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from llmbook.model.blocks import DecoderBlock, EncoderBlock
from llmbook.model.layers import LayerNorm, sinusoidal_positions
from llmbook.model.validation import check_ids

__all__ = ["EncoderDecoder"]


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
        check_ids("src", src, self.src_vocab_size, self.context_length)
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
        check_ids("tgt", tgt, self.tgt_vocab_size, self.context_length)
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
