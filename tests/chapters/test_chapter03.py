"""Teach, then import: Chapter 3's inline attention code agrees with llmbook.model.attention.

The chapter writes masked softmax, scaled dot-product attention, the scoring functions,
the causal mask and multi-head attention inline; ``src/llmbook/model/attention.py``
holds the package copy that later chapters import. Here

* every notebook definition with a package counterpart takes the same parameters
  (names, order, kinds, defaults), and so do the methods that later chapters call;
* both return the same things (the output alone unless ``return_weights=True``);
* both compute the same numbers on the same random inputs, drawn fresh for each seed:
  batch > 1, odd lengths, masks including a fully masked row, causal masks with fewer
  queries than keys, and the fused path.

Tolerances: float32 within 1e-6, float64 within 1e-12 (the two copies run the same
operations; PyTorch's fused kernel, where both use it, is compared the same way).
"""

from pathlib import Path

import pytest
import torch
from notebook_defs import assert_same_signature, notebook_definitions
from torch import nn

import llmbook.model.attention as pkg

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "03_attention.ipynb"
NAMES = [
    "dot_product_scores",
    "scaled_dot_product_scores",
    "AdditiveScore",
    "masked_softmax",
    "causal_mask",
    "scaled_dot_product_attention",
    "MultiHeadAttention",
]
METHODS = {
    "AdditiveScore": ["forward"],
    "MultiHeadAttention": ["forward", "load_from_torch"],
}
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


# --- signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_the_package(nb, name):
    assert_same_signature(getattr(nb, name), getattr(pkg, name))


@pytest.mark.parametrize(
    "cls, method", [(c, m) for c, methods in METHODS.items() for m in methods]
)
def test_method_signature_matches_the_package(nb, cls, method):
    assert_same_signature(
        getattr(getattr(nb, cls), method), getattr(getattr(pkg, cls), method)
    )


# --- numbers ---------------------------------------------------------------------------


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
    # over another dim: the queries of each key
    close(
        nb.masked_softmax(scores, mask, dim=-2),
        pkg.masked_softmax(scores, mask, dim=-2),
        dtype,
    )


def test_causal_mask_agrees(nb):
    for n_q, n_k in ((1, None), (4, None), (7, None), (1, 5), (3, 8), (7, 7)):
        ours, theirs = nb.causal_mask(n_q, n_k), pkg.causal_mask(n_q, n_k)
        assert ours.dtype == torch.bool and torch.equal(ours, theirs), (n_q, n_k)
    assert torch.equal(nb.causal_mask(3, 5)[-1], torch.ones(5, dtype=torch.bool))
    assert nb.causal_mask(4, device="cpu").device.type == "cpu"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_scaled_dot_product_attention_agrees(nb, gen, dtype, masked):
    q = randn(gen, 2, 3, 5, 8, dtype=dtype)  # (batch, heads, n_q, d_k)
    k = randn(gen, 2, 3, 7, 8, dtype=dtype)
    v = randn(gen, 2, 3, 7, 6, dtype=dtype)  # d_v != d_k
    mask = random_mask(gen, 2, 1, 5, 7) if masked else None
    out = nb.scaled_dot_product_attention(q, k, v, mask)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 5, 6)
    close(out, pkg.scaled_dot_product_attention(q, k, v, mask), dtype)
    out, weights = nb.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    ref_out, ref_weights = pkg.scaled_dot_product_attention(
        q, k, v, mask, return_weights=True
    )
    assert weights.shape == (2, 3, 5, 7)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_q, n_k", [(9, 9), (3, 7)], ids=["square", "fewer-q"])
def test_is_causal_agrees_alone_and_with_a_mask(nb, gen, dtype, n_q, n_k):
    q = randn(gen, 3, n_q, 4, dtype=dtype)
    k, v = randn(gen, 3, n_k, 4, dtype=dtype), randn(gen, 3, n_k, 5, dtype=dtype)
    padding = random_mask(gen, 3, 1, n_k)  # (batch, 1, n_k)
    for mask in (None, padding):
        ours = nb.scaled_dot_product_attention(
            q, k, v, mask, is_causal=True, return_weights=True
        )
        theirs = pkg.scaled_dot_product_attention(
            q, k, v, mask, is_causal=True, return_weights=True
        )
        close(ours[0], theirs[0], dtype)
        close(ours[1], theirs[1], dtype)
        assert (ours[1].triu(n_k - n_q + 1) == 0).all()
    explicit = nb.scaled_dot_product_attention(q, k, v, nb.causal_mask(n_q, n_k))
    close(nb.scaled_dot_product_attention(q, k, v, is_causal=True), explicit, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_custom_scale_agrees(nb, gen, dtype):
    q, k, v = (randn(gen, 2, 5, 8, dtype=dtype) for _ in range(3))
    close(
        nb.scaled_dot_product_attention(q, k, v, scale=0.3),
        pkg.scaled_dot_product_attention(q, k, v, scale=0.3),
        dtype,
    )


def twin_modules(nb, d_model, n_heads, dtype, **kw):
    ours = nb.MultiHeadAttention(d_model, n_heads, **kw).to(dtype)
    theirs = pkg.MultiHeadAttention(d_model, n_heads, **kw).to(dtype)
    theirs.load_state_dict(ours.state_dict())  # same parameter names
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_head_self_attention_agrees_with_padding(nb, gen, dtype):
    d_model, n_heads = 24, 3
    ours, theirs = twin_modules(nb, d_model, n_heads, dtype)
    x = randn(gen, 3, 7, d_model, dtype=dtype)  # batch 3, odd length 7
    mask = pkg.padding_mask(torch.tensor([7, 4, 5]))  # (batch, 1, 1, n_k)
    with torch.no_grad():
        out = ours(x, mask=mask)
        assert isinstance(out, torch.Tensor) and out.shape == (3, 7, d_model)
        close(out, theirs(x, mask=mask), dtype)
        out, weights = ours(x, mask=mask, return_weights=True)
        ref_out, ref_weights = theirs(x, mask=mask, return_weights=True)
    assert weights.shape == (3, n_heads, 7, 7)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_head_cross_attention_agrees_with_mask(nb, gen, dtype):
    d_model, n_heads = 16, 4
    ours, theirs = twin_modules(nb, d_model, n_heads, dtype, bias=False)
    query = randn(gen, 2, 5, d_model, dtype=dtype)
    memory = randn(gen, 2, 9, d_model, dtype=dtype)
    mask = random_mask(gen, 2, n_heads, 5, 9)
    with torch.no_grad():
        out, weights = ours(query, memory, memory, mask, return_weights=True)
        ref_out, ref_weights = theirs(query, memory, memory, mask, return_weights=True)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fused", [False, True], ids=["written-out", "fused"])
def test_multi_head_causal_agrees(nb, gen, dtype, fused):
    d_model, n_heads = 20, 4
    ours, theirs = twin_modules(nb, d_model, n_heads, dtype, fused=fused)
    x = randn(gen, 3, 11, d_model, dtype=dtype)
    keep = pkg.padding_mask(torch.tensor([11, 6, 9]))  # no query loses every key
    with torch.no_grad():
        for mask in (None, keep):
            close(
                ours(x, mask=mask, is_causal=True),
                theirs(x, mask=mask, is_causal=True),
                dtype,
            )
        # asking for the weights takes the written-out path, fused or not
        out, weights = ours(x, mask=keep, is_causal=True, return_weights=True)
        ref_out, ref_weights = theirs(x, mask=keep, is_causal=True, return_weights=True)
    close(out, ref_out, dtype)
    close(weights, ref_weights, dtype)


def test_fused_multi_head_equals_written_out(nb, gen):
    """The notebook's fused path against its own written-out path (float64)."""
    ours = nb.MultiHeadAttention(16, 2).double()
    x = randn(gen, 2, 7, 16, dtype=torch.float64)
    with torch.no_grad():
        written_out = ours(x, is_causal=True)
        ours.fused = True
        close(ours(x, is_causal=True), written_out, torch.float64)


def test_load_from_torch_agrees(nb, gen):
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        for p in ref.parameters():  # random weights and biases (torch zeroes biases)
            p.copy_(randn(gen, *p.shape) / 4)
    ours = nb.MultiHeadAttention(16, 4).load_from_torch(ref)
    theirs = pkg.MultiHeadAttention(16, 4).load_from_torch(ref)
    assert isinstance(ours, nb.MultiHeadAttention)
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    x = randn(gen, 2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x, x, x)[0], rtol=0, atol=1e-5)


def test_helper_refuses_names_the_notebook_does_not_define():
    with pytest.raises(KeyError, match="does not define"):
        notebook_definitions(CHAPTER, ["no_such_function"])
