"""llmbook.model.attention against PyTorch's reference implementations.

Tolerances: float32 on CPU, outputs compared with atol=1e-5 (the two compute the same
sums in a different order); float64 cases with atol=1e-10.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmbook.model.attention import (
    AdditiveScore,
    MultiHeadAttention,
    causal_mask,
    dot_product_scores,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
    scaled_dot_product_scores,
)

ATOL = 1e-5


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def randn(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=dtype)


# --- scores and softmax ---------------------------------------------------------------


def test_dot_and_scaled_scores(gen):
    q, k = randn(gen, 2, 5, 16), randn(gen, 2, 7, 16)
    expected = torch.einsum("bid,bjd->bij", q, k)
    torch.testing.assert_close(dot_product_scores(q, k), expected)
    torch.testing.assert_close(scaled_dot_product_scores(q, k), expected / 4.0)


def test_additive_score_matches_explicit_loop(gen):
    score = AdditiveScore(d_q=6, d_k=4, d_hidden=8)
    q, k = randn(gen, 3, 6), randn(gen, 5, 4)
    got = score(q, k)
    expected = torch.empty(3, 5)
    for i in range(3):
        for j in range(5):
            hidden = torch.tanh(score.w_q(q[i]) + score.w_k(k[j]))
            expected[i, j] = score.v(hidden).squeeze()
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_masked_softmax_matches_torch_softmax(gen):
    scores = randn(gen, 4, 3, 9) * 5
    torch.testing.assert_close(masked_softmax(scores), torch.softmax(scores, -1))


def test_masked_softmax_is_stable_for_huge_scores():
    scores = torch.tensor([[1e4, 0.0, -1e4], [3e38, 3e38, 0.0]])
    weights = masked_softmax(scores)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(weights[1], torch.tensor([0.5, 0.5, 0.0]))


def test_masked_positions_get_exactly_zero_and_rows_sum_to_one(gen):
    scores = randn(gen, 2, 5, 6)
    mask = torch.rand(2, 5, 6, generator=gen) > 0.4
    mask[..., 0] = True  # every row keeps at least one key
    weights = masked_softmax(scores, mask)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))


def test_fully_masked_row_gives_zeros_not_nan(gen):
    scores = randn(gen, 3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    weights = masked_softmax(scores, mask)
    assert not torch.isnan(weights).any()
    assert (weights[1] == 0).all()
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))


# --- masks ----------------------------------------------------------------------------


def test_causal_mask_square_and_offset():
    assert causal_mask(3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    # two new queries at positions 3 and 4 of a 5-key sequence
    assert causal_mask(2, 5).tolist() == [
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]


def test_padding_mask_from_lengths_and_attention_mask():
    from_lengths = padding_mask(torch.tensor([3, 1]), n_k=4)
    assert from_lengths.shape == (2, 1, 1, 4)
    assert from_lengths[:, 0, 0].tolist() == [
        [True, True, True, False],
        [True, False, False, False],
    ]
    hf_style = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.equal(padding_mask(hf_style), from_lengths)


# --- scaled dot-product attention vs torch --------------------------------------------


@pytest.mark.parametrize(
    "shape_q, shape_k, d_v",
    [
        ((1, 4, 8), (1, 4, 8), 8),  # plain self-attention
        ((3, 7, 16), (3, 5, 16), 12),  # batch > 1, odd and unequal lengths, d_v != d_k
        ((2, 4, 9, 32), (2, 4, 11, 32), 32),  # (batch, heads, seq, d_head)
    ],
)
def test_sdpa_matches_torch(gen, shape_q, shape_k, d_v):
    q, k = randn(gen, *shape_q), randn(gen, *shape_k)
    v = randn(gen, *shape_k[:-1], d_v)
    ours = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(
        ours, F.scaled_dot_product_attention(q, k, v), atol=ATOL, rtol=0
    )


def test_sdpa_with_bool_mask_matches_torch(gen):
    q, k, v = randn(gen, 2, 3, 6, 8), randn(gen, 2, 3, 9, 8), randn(gen, 2, 3, 9, 8)
    mask = padding_mask(torch.tensor([9, 4]))  # (2, 1, 1, 9)
    ours = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(
        ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=ATOL, rtol=0
    )


def test_sdpa_causal_matches_torch(gen):
    q, k, v = randn(gen, 3, 2, 7, 16), randn(gen, 3, 2, 7, 16), randn(gen, 3, 2, 7, 16)
    ours, weights = scaled_dot_product_attention(
        q, k, v, is_causal=True, return_weights=True
    )
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)
    assert (weights.triu(1) == 0).all()


def test_sdpa_custom_scale_and_float64(gen):
    q, k, v = (randn(gen, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    ours = scaled_dot_product_attention(q, k, v, scale=0.3)
    reference = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=0)


def test_causal_attention_does_not_leak_the_future(gen):
    x = randn(gen, 1, 6, 8)
    out = scaled_dot_product_attention(x, x, x, is_causal=True)
    x2 = x.clone()
    x2[0, 4:] = randn(gen, 2, 8)  # change the last two tokens
    out2 = scaled_dot_product_attention(x2, x2, x2, is_causal=True)
    torch.testing.assert_close(out[0, :4], out2[0, :4])
    assert not torch.allclose(out[0, 4:], out2[0, 4:])


def test_scaling_keeps_score_variance_near_one(gen):
    d_k = 256
    q, k = randn(gen, 4000, d_k), randn(gen, 4000, d_k)
    raw = (q * k).sum(-1)
    assert raw.var().item() == pytest.approx(d_k, rel=0.1)
    assert (raw / math.sqrt(d_k)).var().item() == pytest.approx(1.0, rel=0.1)


# --- multi-head attention vs nn.MultiheadAttention ------------------------------------


def _pair(d_model=24, n_heads=4, bias=True):
    torch.manual_seed(7)
    reference = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True)
    ours = MultiHeadAttention(d_model, n_heads, bias=bias).load_from_torch(reference)
    return ours.eval(), reference.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_mha_self_attention_matches_torch(gen, bias):
    ours, reference = _pair(bias=bias)
    x = randn(gen, 3, 7, 24)
    out, weights = ours(x, return_weights=True)
    ref_out, ref_weights = reference(x, x, x, need_weights=True)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    # torch averages the weights over heads by default
    torch.testing.assert_close(weights.mean(1), ref_weights, atol=ATOL, rtol=0)


def test_mha_cross_attention_with_padding_matches_torch(gen):
    ours, reference = _pair()
    query, memory = randn(gen, 2, 5, 24), randn(gen, 2, 9, 24)
    lengths = torch.tensor([9, 6])
    out = ours(query, memory, memory, mask=padding_mask(lengths))
    # torch's key_padding_mask is the opposite convention: True = ignore
    ignore = ~padding_mask(lengths)[:, 0, 0]
    ref_out, _ = reference(query, memory, memory, key_padding_mask=ignore)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)


def test_mha_causal_matches_torch(gen):
    ours, reference = _pair()
    x = randn(gen, 2, 6, 24)
    out = ours(x, is_causal=True)
    ref_out, _ = reference(x, x, x, attn_mask=~causal_mask(6), need_weights=False)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)


def test_mha_gradients_reach_every_parameter(gen):
    ours, _ = _pair()
    ours(randn(gen, 2, 5, 24), is_causal=True).pow(2).sum().backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --- clear errors ---------------------------------------------------------------------


def test_errors_name_the_problem(gen):
    q, k = randn(gen, 2, 5, 8), randn(gen, 2, 5, 6)
    with pytest.raises(
        ValueError, match="q and k must share the last dim: got 8 and 6"
    ):
        scaled_dot_product_attention(q, k, k)
    with pytest.raises(ValueError, match="k and v must have the same number"):
        scaled_dot_product_attention(q, q, randn(gen, 2, 4, 8))
    with pytest.raises(TypeError, match="floating-point"):
        scaled_dot_product_attention(q.long(), q, q)
    with pytest.raises(TypeError, match="bool tensor"):
        masked_softmax(q, torch.ones(2, 5, 8))
    with pytest.raises(ValueError, match="does not broadcast"):
        masked_softmax(q, torch.ones(3, 5, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match=r"shape \(batch, seq, 24\)"):
        _pair()[0](randn(gen, 2, 5, 12))
    with pytest.raises(ValueError, match="exceeds n_k"):
        padding_mask(torch.tensor([5]), n_k=3)


# --- fused kernel option ----------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_mha_equals_written_out(gen, causal, with_mask):
    ours, _ = _pair()
    fused = MultiHeadAttention(24, 4, fused=True)
    fused.load_state_dict(ours.state_dict())
    x = randn(gen, 3, 7, 24)
    mask = padding_mask(torch.tensor([7, 4, 1]), n_k=7) if with_mask else None
    expected = ours(x, mask=mask, is_causal=causal)
    got = fused(x, mask=mask, is_causal=causal)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    # asking for the weights falls back to the written-out path
    out, weights = fused(x, mask=mask, is_causal=causal, return_weights=True)
    torch.testing.assert_close(out, expected)
    assert weights.shape == (3, 4, 7, 7)


@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_causal_cross_attention_equals_written_out(gen, with_mask):
    """Fewer queries than keys: the causal diagonal is bottom-right on both paths."""
    ours, _ = _pair()
    fused = MultiHeadAttention(24, 4, fused=True)
    fused.load_state_dict(ours.state_dict())
    query, memory = randn(gen, 3, 5, 24), randn(gen, 3, 9, 24)
    mask = padding_mask(torch.tensor([9, 8, 7]), n_k=9) if with_mask else None
    expected = ours(query, memory, memory, mask, is_causal=True)
    got = fused(query, memory, memory, mask, is_causal=True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_fused_gpt_equals_unfused():
    from llmbook.model import GPT, GPTConfig

    torch.manual_seed(0)
    plain = GPT(GPTConfig(vocab_size=50, context_length=16, n_layers=2))
    fused = GPT(
        GPTConfig(vocab_size=50, context_length=16, n_layers=2, fused_attention=True)
    )
    fused.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 50, (2, 11))
    torch.testing.assert_close(fused(idx), plain(idx), atol=1e-5, rtol=1e-5)
