"""Teach, then import: Chapter 4's inline Transformer code agrees with llmbook.model.

The chapter writes LayerNorm, the feed-forward block, position encodings, the encoder,
decoder and GPT blocks, the encoder-decoder, GPT (with generation, GPT-2
initialisation, Hugging Face weight loading), the parameter-count formula and the
Xavier/He initialisers inline; ``src/llmbook/model/`` holds the package copy. Here

* every notebook definition with a package counterpart takes the same parameters
  (names, order, kinds, defaults), and so do the methods the package also has;
* both run with the same weights on the same seeded random inputs (batch > 1, odd
  lengths, padding masks) and give the same numbers.

Tolerance: float32 within 1e-6 (the two copies run the same operations in the same
order, so in practice they agree exactly).
"""

from pathlib import Path

import pytest
import torch
from notebook_defs import (
    assert_same_signature,
    assert_signature_extends,
    notebook_definitions,
)

import llmbook.model as pkg
from llmbook.decoding import generate
from llmbook.model.attention import padding_mask

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "04_transformer.ipynb"
NAMES = [
    "sinusoidal_positions",
    "apply_rope",
    "LayerNorm",
    "FeedForward",
    "EncoderBlock",
    "DecoderBlock",
    "EncoderDecoder",
    "GPTConfig",
    "GPTBlock",
    "GPT",
    "init_gpt2_",
    "count_parameters",
    "xavier_uniform_",
    "he_normal_",
    "load_hf_gpt2_weights",
]
METHODS = {
    "LayerNorm": ["forward"],
    "FeedForward": ["forward"],
    "EncoderBlock": ["forward", "load_from_torch", "residual_projections"],
    "DecoderBlock": ["forward", "residual_projections"],
    "GPTBlock": ["forward", "residual_projections"],
    "EncoderDecoder": ["encode", "decode", "forward", "greedy_decode"],
    "GPT": ["forward"],  # the package generates with llmbook.decoding.generate
}
# The package's forward passes add keyword-only hooks for later chapters (a KV cache,
# a learned prefix, input embeddings, a padding mask, hidden states and attentions).
EXTENDED = {("GPT", "forward"), ("GPTBlock", "forward")}
ATOL = 1e-6


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(CHAPTER, NAMES)


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def gen(request):
    torch.manual_seed(40 + request.param)
    return torch.Generator().manual_seed(4 + request.param)


def close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


def twins(make_nb, make_pkg):
    ours, theirs = make_nb(), make_pkg()
    theirs.load_state_dict(ours.state_dict())  # same parameter names and shapes
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_the_package(nb, name):
    assert_same_signature(getattr(nb, name), getattr(pkg, name))


@pytest.mark.parametrize(
    "cls, method", [(c, m) for c, methods in METHODS.items() for m in methods]
)
def test_method_signature_matches_the_package(nb, cls, method):
    ours, theirs = getattr(getattr(nb, cls), method), getattr(getattr(pkg, cls), method)
    if (cls, method) in EXTENDED:
        assert_signature_extends(ours, theirs)
    else:
        assert_same_signature(ours, theirs)


def test_positions_agree(nb, gen):
    close(nb.sinusoidal_positions(37, 16), pkg.sinusoidal_positions(37, 16))
    x = torch.randn(2, 3, 11, 8, generator=gen)
    close(nb.apply_rope(x), pkg.apply_rope(x))
    pos = torch.tensor([5, 0, 9, 2, 7, 1, 3, 4, 8, 6, 10])
    close(nb.apply_rope(x, pos), pkg.apply_rope(x, pos))


def test_layer_norm_and_feed_forward_agree(nb, gen):
    x = torch.randn(3, 7, 24, generator=gen) * 3 + 1
    for bias in (True, False):
        ours, theirs = twins(
            lambda b=bias: nb.LayerNorm(24, bias=b),
            lambda b=bias: pkg.LayerNorm(24, bias=b),
        )
        close(ours(x), theirs(x))
    for act in ("gelu_tanh", "gelu", "relu"):
        ours, theirs = twins(
            lambda a=act: nb.FeedForward(24, 40, activation=a),
            lambda a=act: pkg.FeedForward(24, 40, activation=a),
        )
        with torch.no_grad():
            close(ours(x), theirs(x))


@pytest.mark.parametrize("pre_ln", [False, True], ids=["post-LN", "pre-LN"])
def test_blocks_agree(nb, gen, pre_ln):
    kw = dict(pre_ln=pre_ln, activation="gelu")
    enc = twins(
        lambda: nb.EncoderBlock(32, 4, 48, **kw),
        lambda: pkg.EncoderBlock(32, 4, 48, **kw),
    )
    dec = twins(
        lambda: nb.DecoderBlock(32, 4, 48, **kw),
        lambda: pkg.DecoderBlock(32, 4, 48, **kw),
    )
    x, memory = (
        torch.randn(3, 7, 32, generator=gen),
        torch.randn(3, 9, 32, generator=gen),
    )
    keep = padding_mask(torch.tensor([7, 4, 5]))
    memory_keep = padding_mask(torch.tensor([9, 2, 6]))
    with torch.no_grad():
        close(enc[0](x, keep), enc[1](x, keep))
        close(enc[0](x, is_causal=True), enc[1](x, is_causal=True))
        out, w = dec[0](x, memory, keep, memory_keep, return_weights=True)
        ref_out, ref_w = dec[1](x, memory, keep, memory_keep, return_weights=True)
    close(out, ref_out)
    close(w, ref_w)


@pytest.mark.parametrize("fused", [False, True], ids=["written-out", "fused"])
def test_gpt_block_agrees(nb, gen, fused):
    ours, theirs = twins(
        lambda: nb.GPTBlock(32, 4, 40, bias=False, eps=1e-6, fused=fused),
        lambda: pkg.GPTBlock(32, 4, 40, bias=False, eps=1e-6, fused=fused),
    )
    x = torch.randn(3, 9, 32, generator=gen)
    keep = padding_mask(torch.tensor([9, 5, 8]))
    with torch.no_grad():
        close(ours(x), theirs(x))
        close(ours(x, keep), theirs(x, keep))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.EncoderBlock(16, 2, fused=True),
        lambda m: m.DecoderBlock(16, 2),
        lambda m: m.GPTBlock(16, 2),
    ],
    ids=["encoder", "decoder", "gpt"],
)
def test_blocks_name_the_same_residual_projections(nb, make):
    def names(block):
        where = {id(module): name for name, module in block.named_modules()}
        return [where[id(proj)] for proj in block.residual_projections()]

    assert names(make(nb)) == names(make(pkg))


def test_encoder_block_loads_torch_layer_like_the_package(nb, gen):
    ref = torch.nn.TransformerEncoderLayer(
        16, 2, 24, dropout=0.0, activation="gelu", batch_first=True
    ).eval()
    ours = nb.EncoderBlock(16, 2, 24).load_from_torch(ref).eval()
    theirs = pkg.EncoderBlock(16, 2, 24).load_from_torch(ref).eval()
    x = torch.randn(2, 5, 16, generator=gen)
    with torch.no_grad():
        close(ours(x), theirs(x))
        close(ours(x), ref(x), atol=1e-5)


def test_encoder_decoder_agrees(nb, gen):
    kw = dict(d_model=32, n_heads=4, n_layers=2, context_length=32)
    ours, theirs = twins(
        lambda: nb.EncoderDecoder(20, 30, **kw),
        lambda: pkg.EncoderDecoder(20, 30, **kw),
    )
    src = torch.randint(0, 20, (3, 11), generator=gen)
    tgt = torch.randint(0, 30, (3, 7), generator=gen)
    keep = padding_mask(torch.tensor([11, 6, 9]))
    with torch.no_grad():
        close(ours(src, tgt, keep), theirs(src, tgt, keep))
    assert torch.equal(
        ours.greedy_decode(src, 1, 6, keep), theirs.greedy_decode(src, 1, 6, keep)
    )


def configs(nb):
    kw = dict(vocab_size=50, context_length=16, d_model=32, n_heads=4, n_layers=3)
    return nb.GPTConfig(**kw), pkg.GPTConfig(**kw)


def test_gpt_agrees_and_generates_the_same(nb, gen):
    nb_cfg, pkg_cfg = configs(nb)
    ours, theirs = twins(lambda: nb.GPT(nb_cfg), lambda: pkg.GPT(pkg_cfg))
    idx = torch.randint(0, 50, (3, 13), generator=gen)
    with torch.no_grad():
        close(ours(idx), theirs(idx))
    for kw in (dict(temperature=0), dict(top_k=5), dict(temperature=0.7)):
        a = ours.generate(idx, 6, generator=torch.Generator().manual_seed(0), **kw)
        b = generate(theirs, idx, 6, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(a, b), kw
    with pytest.raises(ValueError, match="context_length"):
        ours(torch.zeros(1, 17, dtype=torch.long))


def test_gpt2_init_draws_the_same_weights(nb):
    nb_cfg, pkg_cfg = configs(nb)
    torch.manual_seed(0)
    ours = nb.GPT(nb_cfg)
    torch.manual_seed(0)
    theirs = pkg.GPT(pkg_cfg)
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_gpt2_init_of_an_encoder_decoder_draws_the_same_weights(nb):
    """Decoder blocks name three residual projections: N = 2 L_enc + 3 L_dec."""
    kw = dict(d_model=32, n_heads=4, n_layers=3, context_length=16)
    torch.manual_seed(1)
    ours = nb.init_gpt2_(nb.EncoderDecoder(20, 30, **kw))
    torch.manual_seed(1)
    theirs = pkg.init_gpt2_(pkg.EncoderDecoder(20, 30, **kw))
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    scaled = 0.02 / (2 * 3 + 3 * 3) ** 0.5
    cross = torch.cat([b.cross_attn.out_proj.weight.flatten() for b in ours.decoder])
    assert cross.std().item() == pytest.approx(scaled, rel=0.1)


def test_fused_gpt_agrees(nb, gen):
    kw = dict(vocab_size=50, context_length=16, d_model=32, n_heads=4, n_layers=2)
    nb_cfg = nb.GPTConfig(**kw, fused_attention=True)
    pkg_cfg = pkg.GPTConfig(**kw, fused_attention=True)
    ours, theirs = twins(lambda: nb.GPT(nb_cfg), lambda: pkg.GPT(pkg_cfg))
    assert all(block.attn.fused for block in ours.blocks)
    idx = torch.randint(0, 50, (3, 11), generator=gen)
    with torch.no_grad():
        close(ours(idx), theirs(idx))


def test_parameter_count_agrees(nb):
    for kw in (
        {},
        dict(
            vocab_size=77, context_length=9, d_model=24, n_heads=3, d_ff=40, bias=False
        ),
        dict(
            vocab_size=50257, context_length=1024, d_model=768, n_heads=12, n_layers=12
        ),
    ):
        assert nb.count_parameters(nb.GPTConfig(**kw)) == pkg.count_parameters(
            pkg.GPTConfig(**kw)
        )


def test_initialisers_agree(nb):
    for ours_fn, pkg_fn in (
        (nb.xavier_uniform_, pkg.xavier_uniform_),
        (nb.he_normal_, pkg.he_normal_),
    ):
        a, b = torch.empty(30, 50), torch.empty(30, 50)
        ours_fn(a, generator=torch.Generator().manual_seed(1))
        pkg_fn(b, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)


def test_hf_loading_agrees(nb, gen, tiny_hf_gpt2):
    hf = tiny_hf_gpt2
    cfg = dict(vocab_size=100, context_length=64, d_model=48, n_heads=4, n_layers=2)
    ours = nb.load_hf_gpt2_weights(nb.GPT(nb.GPTConfig(**cfg)), hf).eval()
    theirs = pkg.GPT.from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 100, (3, 17), generator=gen)
    with torch.no_grad():
        close(ours(idx), theirs(idx))
        close(ours(idx), hf(idx).logits, atol=1e-5)
