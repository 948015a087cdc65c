"""Teach, then import: Chapter 3's inline attention code agrees with llmbook.attention.

The chapter writes masked softmax, scaled dot-product attention, the scoring functions
and multi-head attention inline; ``src/llmbook/attention.py`` holds the package copy
that later chapters import. Here both run on the same random inputs (seeded; batch > 1,
odd lengths, masks including a fully masked row).

Tolerances: float32 within 1e-6 (the two divide vs multiply by sqrt(d), a last-bit
difference); float64 within 1e-12.
"""

from pathlib import Path

import pytest
import torch
from notebook_defs import notebook_definitions

import llmbook.attention as pkg

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "03_attention.ipynb"
NAMES = [
    "dot_product_scores",
    "scaled_dot_product_scores",
    "AdditiveScore",
    "masked_softmax",
    "causal_mask",
    "scaled_dot_product_attention",
    "MultiHeadAttention",
]
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
DTYPES = list(TOL)


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(CHAPTER, NAMES)


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def gen(request):
    return torch.Generator().manual_seed(1000 + request.param)


def randn(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=dtype)


def random_mask(gen, *shape):
    """A random keep-mask (True = may attend) with one fully masked query row."""
    mask = torch.rand(*shape, generator=gen) > 0.4
    mask[..., 0, :] = False
    return mask


def close(a, b, dtype):
    torch.testing.assert_close(a, b, rtol=0, atol=TOL[dtype])


def test_the_definitions_come_from_the_notebook(nb):
    for name in NAMES:
        obj = getattr(nb, name)
        assert obj.__module__ == "notebook:03_attention", name
        assert obj is not getattr(pkg, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_agree(nb, gen, dtype):
    q, k = randn(gen, 3, 5, 16, dtype=dtype), randn(gen, 3, 7, 16, dtype=dtype)
    close(nb.dot_product_scores(q, k), pkg.dot_product_scores(q, k), dtype)
    close(
        nb.scaled_dot_product_scores(q, k), pkg.scaled_dot_product_scores(q, k), dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_additive_score_agrees(nb, gen, dtype):
    ours = nb.AdditiveScore(d_q=6, d_k=4, d_hidden=8).to(dtype)
    theirs = pkg.AdditiveScore(d_q=6, d_k=4, d_hidden=8).to(dtype)
    theirs.load_state_dict(ours.state_dict())  # same parameter names, same shapes
    q, k = randn(gen, 2, 3, 6, dtype=dtype), randn(gen, 2, 5, 4, dtype=dtype)
    with torch.no_grad():
        close(ours(q, k), theirs(q, k), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax_agrees(nb, gen, dtype):
    scores = randn(gen, 2, 3, 5, 7, dtype=dtype) * 4
    mask = random_mask(gen, 2, 1, 5, 7)  # broadcasts over the middle dim
    got = nb.masked_softmax(scores, mask)
    close(got, pkg.masked_softmax(scores, mask), dtype)
    assert torch.equal(got[..., 0, :], torch.zeros_like(got[..., 0, :]))
    assert (got[~mask.expand_as(got)] == 0).all()
    close(nb.masked_softmax(scores), pkg.masked_softmax(scores), dtype)


def test_causal_mask_agrees(nb):
    for n in (1, 4, 7):
        assert torch.equal(nb.causal_mask(n), pkg.causal_mask(n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_scaled_dot_product_attention_agrees(nb, gen, dtype, masked):
    q = randn(gen, 2, 3, 5, 8, dtype=dtype)  # (batch, heads, n_q, d_k)
    k = randn(gen, 2, 3, 7, 8, dtype=dtype)
    v = randn(gen, 2, 3, 7, 6, dtype=dtype)  # d_v != d_k
    mask = random_mask(gen, 2, 1, 5, 7) if masked else None
    out, weights = nb.scaled_dot_product_attention(q, k, v, mask)
    ref_out, ref_weights = pkg.scaled_dot_product_attention(
        q, k, v, mask, return_weights=True
    )
    assert out.shape == (2, 3, 5, 6) and weights.shape == (2, 3, 5, 7)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scaled_dot_product_attention_with_causal_mask(nb, gen, dtype):
    x = randn(gen, 3, 9, 4, dtype=dtype)
    mask = nb.causal_mask(9)
    out, weights = nb.scaled_dot_product_attention(x, x, x, mask)
    ref_out, ref_weights = pkg.scaled_dot_product_attention(
        x, x, x, is_causal=True, return_weights=True
    )
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)
    assert (weights.triu(1) == 0).all()


def twin_modules(nb, d_model, n_heads, dtype):
    ours = nb.MultiHeadAttention(d_model, n_heads).to(dtype)
    theirs = pkg.MultiHeadAttention(d_model, n_heads).to(dtype)
    theirs.load_state_dict(ours.state_dict())  # same parameter names
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_head_self_attention_agrees_with_padding(nb, gen, dtype):
    d_model, n_heads = 24, 3
    ours, theirs = twin_modules(nb, d_model, n_heads, dtype)
    x = randn(gen, 3, 7, d_model, dtype=dtype)  # batch 3, odd length 7
    mask = pkg.padding_mask(torch.tensor([7, 4, 5]))  # (batch, 1, 1, n_k)
    with torch.no_grad():
        out, weights = ours(x, mask=mask)
        ref_out, ref_weights = theirs(x, mask=mask, return_weights=True)
    assert out.shape == (3, 7, d_model) and weights.shape == (3, n_heads, 7, 7)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_head_cross_attention_agrees_with_mask(nb, gen, dtype):
    d_model, n_heads = 16, 4
    ours, theirs = twin_modules(nb, d_model, n_heads, dtype)
    query = randn(gen, 2, 5, d_model, dtype=dtype)
    memory = randn(gen, 2, 9, d_model, dtype=dtype)
    mask = random_mask(gen, 2, n_heads, 5, 9)
    with torch.no_grad():
        out, weights = ours(query, memory, memory, mask)
        ref_out, ref_weights = theirs(query, memory, memory, mask, return_weights=True)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


def test_helper_refuses_names_the_notebook_does_not_define():
    with pytest.raises(KeyError, match="does not define"):
        notebook_definitions(CHAPTER, ["no_such_function"])
