"""llmbook.model.layers against reference and independent implementations.

References and tolerances (seeded random inputs, drawn fresh for each seed; batch > 1,
odd lengths):

* ``LayerNorm`` vs ``torch.nn.LayerNorm``, same weights: atol 1e-5 (rtol 0).
* ``FeedForward`` vs the tanh-GELU formula written out: atol 1e-5.
* ``sinusoidal_positions`` vs the formula of "Attention Is All You Need" in numpy
  float64, and vs the table of Hugging Face's XLM
  (``transformers.models.xlm.modeling_xlm.create_sinusoidal_embeddings``, float64
  rounded to float32). Ours computes the angles ``p * base^(-2i/d)`` in float32, so its
  error grows with the position: the tolerance is ``1e-7 + 4 * n * 2^-24``, four
  float32 ulps of the largest angle (n - 1 radians) plus the rounding of the value.
* ``apply_rope`` vs the rotary helpers of Hugging Face's LLaMA (``LlamaRotaryEmbedding``
  for cos and sin, ``apply_rotary_pos_emb`` / ``rotate_half`` for the rotation).
  LLaMA pairs feature i with feature i + d/2 (the two halves); ours pairs 2i with
  2i + 1 (neighbours). Both rotate pair i by ``p * base^(-2i/d)``, so after moving
  our even features to the first half and our odd ones to the second,
  ``apply_rope(x)[..., perm] == llama(x[..., perm])``. LLaMA computes its angles in
  float32; the tolerance is ``1e-6 + 4 * max_position * 2^-24 * max|x|``.
* RoPE's relative-position property, on random q and k in float64: shifting every
  query and key position by the same amount leaves the scores unchanged, atol 1e-9.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.xlm.modeling_xlm import create_sinusoidal_embeddings

from llmbook.model.layers import (
    FeedForward,
    LayerNorm,
    apply_rope,
    sinusoidal_positions,
)

ATOL = 1e-5


def close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def gen(request):
    torch.manual_seed(7000 + request.param)  # module weights
    return torch.Generator().manual_seed(700 + request.param)  # inputs


def randn(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=dtype)


# --- LayerNorm and the feed-forward network --------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_matches_torch(gen, bias):
    ref = nn.LayerNorm(24, eps=1e-5, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(randn(gen, 24))
        if bias:
            ref.bias.copy_(randn(gen, 24))
    ours = LayerNorm(24, eps=1e-5, bias=bias)
    ours.load_state_dict(ref.state_dict())
    x = randn(gen, 3, 7, 24) * 5 + 2
    close(ours(x), ref(x))


def test_layer_norm_rejects_wrong_size():
    with pytest.raises(ValueError, match="last dim 8"):
        LayerNorm(8)(torch.randn(2, 3, 5))


def test_feed_forward_uses_tanh_gelu_by_default(gen):
    ff = FeedForward(8, 32)
    x = randn(gen, 2, 5, 8)
    h = ff.fc1(x)
    tanh_gelu = (
        0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    )
    close(ff(x), ff.fc2(tanh_gelu))
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(8, 32, activation="swish")


# --- the sinusoidal table --------------------------------------------------------------


def numpy_sinusoidal(n, d, base=10000.0):
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(same), in float64."""
    angle = np.arange(n)[:, None] / base ** (2 * np.arange(d // 2)[None, :] / d)
    table = np.empty((n, d))
    table[:, 0::2], table[:, 1::2] = np.sin(angle), np.cos(angle)
    return torch.from_numpy(table)


def table_tolerance(n):
    return 1e-7 + 4 * n * 2**-24


@pytest.mark.parametrize("n, d", [(1, 2), (37, 16), (101, 6), (1024, 128)])
@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_sinusoidal_positions_match_the_formula_in_float64(n, d, base):
    pe = sinusoidal_positions(n, d, base)
    assert pe.shape == (n, d) and pe.dtype == torch.float32
    close(pe.double(), numpy_sinusoidal(n, d, base), atol=table_tolerance(n))


@pytest.mark.parametrize("n, d", [(37, 16), (513, 64)])
def test_sinusoidal_positions_match_hugging_face_xlm(n, d):
    ref = create_sinusoidal_embeddings(n, d, torch.empty(n, d))
    close(sinusoidal_positions(n, d), ref, atol=table_tolerance(n))


def test_sinusoidal_positions_reject_odd_d():
    with pytest.raises(ValueError, match="even d"):
        sinusoidal_positions(4, 5)


# --- RoPE ------------------------------------------------------------------------------


def halves(d):
    """Our pair i, features (2i, 2i+1), goes to LLaMA's pair, features (i, i + d/2)."""
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


def llama_rope(x, positions, base):
    """Hugging Face LLaMA's rotary embedding of x (..., seq, d) in its own layout."""
    d = x.shape[-1]
    config = LlamaConfig(
        hidden_size=d, num_attention_heads=1, head_dim=d, rope_theta=base
    )
    cos, sin = LlamaRotaryEmbedding(config)(x, positions[None])  # (1, seq, d) each
    rotated, _ = apply_rotary_pos_emb(x, x, cos[0], sin[0], unsqueeze_dim=0)
    return rotated


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape, base",
    [((3, 11, 8), 10000.0), ((2, 3, 9, 64), 10000.0), ((2, 7, 16), 500.0)],
)
def test_rope_matches_hugging_face_llama(gen, dtype, shape, base):
    x = randn(gen, *shape, dtype=dtype)
    seq, d = shape[-2:]
    perm = halves(d)
    for positions in (
        torch.arange(seq),  # the default
        torch.randint(0, 2048, (seq,), generator=gen),  # any order, far along
    ):
        ref = llama_rope(x[..., perm], positions, base)
        atol = 1e-6 + 4 * int(positions.max()) * 2**-24 * x.abs().max().item()
        close(apply_rope(x, positions, base)[..., perm], ref, atol=atol)
    close(apply_rope(x, base=base), apply_rope(x, torch.arange(seq), base), atol=0)


def test_rope_scores_depend_only_on_relative_position(gen):
    q = randn(gen, 2, 3, 7, 16, dtype=torch.float64)  # (batch, heads, seq, d)
    k = randn(gen, 2, 3, 9, 16, dtype=torch.float64)
    pos_q = torch.randint(0, 64, (7,), generator=gen)
    pos_k = torch.randint(0, 64, (9,), generator=gen)

    def scores(shift):
        rq, rk = apply_rope(q, pos_q + shift), apply_rope(k, pos_k + shift)
        return rq @ rk.transpose(-2, -1)  # (batch, heads, 7, 9)

    reference = scores(0)
    for shift in (1, 17, 1000):
        close(scores(shift), reference, atol=1e-9)
    # ...and they do depend on the offset: moving only the keys changes them
    moved = apply_rope(q, pos_q) @ apply_rope(k, pos_k + 3).transpose(-2, -1)
    assert (moved - reference).abs().max() > 1e-3


def test_rope_rotates_position_zero_by_nothing_and_keeps_lengths(gen):
    x = randn(gen, 2, 5, 12, dtype=torch.float64)
    positions = torch.tensor([0, 3, 8, 100, 7])
    rotated = apply_rope(x, positions)
    close(rotated[:, 0], x[:, 0], atol=0)
    close(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-12)
    with pytest.raises(ValueError, match="even last dim"):
        apply_rope(torch.randn(2, 3, 5))
