"""Memory arithmetic for training and serving (Chapter 11, section 1).

How many bytes the weights, gradients, optimizer state, activations and KV cache
of a decoder-only Transformer take, from its shape alone. ``tests/unit/deploy/test_serve.py``
checks the numbers for the course GPT against the sizes of the real tensors (the
parameters, the gradients and AdamW's state after a step, a ``KVCache``), and the
parameter counts of the 7B and 70B shapes against their published sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BYTES", "LLAMA2_7B", "LLAMA2_70B", "ModelShape", "memory_table"]

#: Bytes per stored number.
BYTES = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide memory. ``n_kv_heads < n_heads`` is grouped-query
    attention (fewer keys and values to cache); ``gated_ffn`` is a SwiGLU block
    (three matrices instead of two); ``tied`` shares the embedding and LM head."""

    name: str
    vocab_size: int
    context_length: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    n_kv_heads: int | None = None
    gated_ffn: bool = False
    tied: bool = False
    bias: bool = False
    learned_positions: bool = False

    @property
    def kv_dim(self) -> int:
        kv_heads = self.n_kv_heads or self.n_heads
        return kv_heads * (self.d_model // self.n_heads)

    @classmethod
    def from_gpt_config(cls, config, name: str = "course GPT") -> ModelShape:
        """The shape of the course's ``GPT(config)`` (GPT-2 style)."""
        return cls(name, config.vocab_size, config.context_length, config.d_model,
                   config.n_heads, config.n_layers, config.d_ff, tied=True,
                   bias=config.bias, learned_positions=True)  # fmt: skip

    def n_params(self) -> int:
        """Parameters in closed form (GPT-2 and Llama layouts)."""
        d, f, b, kv = self.d_model, self.d_ff, int(self.bias), self.kv_dim
        attn = 2 * d * d + 2 * d * kv + b * (2 * d + 2 * kv)  # Q, O and K, V
        ffn = (3 if self.gated_ffn else 2) * d * f + b * (f + d)
        norms = 2 * (1 + b) * d  # two norms per block (LayerNorm has a bias)
        emb = self.vocab_size * d * (1 if self.tied else 2)
        pos = self.context_length * d if self.learned_positions else 0
        return self.n_layers * (attn + ffn + norms) + emb + pos + (1 + b) * d

    def kv_cache_bytes(self, seq_len: int, batch: int = 1, dtype: str = "bf16"):
        """Keys and values of every layer: 2 x layers x batch x seq x kv_dim."""
        return 2 * self.n_layers * batch * seq_len * self.kv_dim * BYTES[dtype]

    def activation_bytes(self, seq_len: int, batch: int = 1, dtype: str = "bf16"):
        """Activations kept for the backward pass, per Korthikanti et al. (2022),
        without recomputation: ``s b h (34 + 5 a s / h)`` bytes per layer at 16 bits
        (scaled for other widths), plus the logits (s b V, fp32 for the loss)."""
        s, b, h, a = seq_len, batch, self.d_model, self.n_heads
        per_layer = s * b * h * (34 + 5 * a * s / h) * BYTES[dtype] / 2
        return self.n_layers * per_layer + 4 * s * b * self.vocab_size


#: Llama 2's published shapes (Touvron et al., 2023).
LLAMA2_7B = ModelShape("7B (Llama 2)", 32000, 4096, 4096, 32, 32, 11008,
                       gated_ffn=True)  # fmt: skip
LLAMA2_70B = ModelShape("70B (Llama 2)", 32000, 4096, 8192, 64, 80, 28672,
                        n_kv_heads=8, gated_ffn=True)  # fmt: skip


def memory_table(
    shape: ModelShape,
    dtype: str,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    training: bool = False,
) -> dict[str, float]:
    """Bytes needed, by part. Serving: weights at ``dtype`` and a KV cache (bf16,
    or fp32 when the weights are fp32) for ``batch`` x ``seq_len`` positions.
    Training (mixed precision when ``dtype`` is bf16, AdamW): weights and gradients
    at ``dtype``, optimizer state = two fp32 moments, plus an fp32 master copy
    when the weights are not fp32; activations as in :meth:`activation_bytes`."""
    if dtype not in BYTES:
        raise ValueError(f"dtype must be one of {sorted(BYTES)}, got {dtype!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    seq_len = shape.context_length if seq_len is None else seq_len
    n = shape.n_params()
    width = BYTES[dtype]
    cache_dtype = "fp32" if dtype == "fp32" else "bf16"
    row = {"weights": n * width}
    if training:
        if dtype in ("int8", "int4"):
            raise ValueError("training keeps float weights: use fp32 or bf16")
        row["gradients"] = n * width
        row["optimizer"] = n * 4 * (2 if dtype == "fp32" else 3)  # m, v (+ master)
        row["activations"] = shape.activation_bytes(seq_len, batch, cache_dtype)
    else:
        row["kv_cache"] = shape.kv_cache_bytes(seq_len, batch, cache_dtype)
    row["total"] = sum(row.values())
    return row
