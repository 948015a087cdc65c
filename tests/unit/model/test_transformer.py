"""llmbook.model against reference implementations.

References and tolerances (float32, seeded random inputs, batch > 1, odd lengths):

* ``EncoderBlock`` vs ``torch.nn.TransformerEncoderLayer`` and ``DecoderBlock`` vs
  ``torch.nn.TransformerDecoderLayer`` (post-LN and ``norm_first``; with and without
  padding masks), same weights: atol 1e-5;
* ``GPT.from_hf_gpt2`` vs a randomly initialised Hugging Face ``GPT2LMHeadModel``
  (built locally, nothing downloaded): logits within atol 1e-5;
* ``xavier_uniform_`` / ``he_normal_`` vs ``torch.nn.init``: sample std within 3%.

LayerNorm, the feed-forward network, the sinusoidal table and RoPE are tested in
``tests/unit/model/test_layers.py``.
"""

import math

import pytest
import torch
from torch import nn

from llmbook.decoding import generate
from llmbook.model import (
    GPT,
    DecoderBlock,
    EncoderBlock,
    EncoderDecoder,
    GPTConfig,
    count_parameters,
    he_normal_,
    init_gpt2_,
    xavier_uniform_,
)
from llmbook.model.attention import padding_mask

ATOL = 1e-5


def close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def gen(request):
    torch.manual_seed(4000 + request.param)  # module weights
    return torch.Generator().manual_seed(400 + request.param)  # inputs


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen)


# --- blocks vs PyTorch ----------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padding"])
def test_encoder_block_matches_torch(gen, norm_first, activation, masked):
    d_model, n_heads = 32, 4
    ref = nn.TransformerEncoderLayer(
        d_model, n_heads, dim_feedforward=48, dropout=0.0, activation=activation,
        batch_first=True, norm_first=norm_first,
    ).eval()  # fmt: skip
    ours = EncoderBlock(d_model, n_heads, 48, pre_ln=norm_first, activation=activation)
    ours.load_from_torch(ref).eval()
    x = randn(gen, 3, 7, d_model)
    lengths = torch.tensor([7, 4, 5])
    keep = padding_mask(lengths) if masked else None  # (batch, 1, 1, seq)
    with torch.no_grad():
        got = ours(x, keep)
        want = ref(x, src_key_padding_mask=None if keep is None else ~keep[:, 0, 0])
    close(got, want)


def test_encoder_block_refuses_mismatched_torch_layer():
    ref = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True)
    with pytest.raises(ValueError, match="norm_first=True"):
        EncoderBlock(16, 2, 32, pre_ln=False).load_from_torch(ref)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_decoder_block_matches_torch(gen, norm_first):
    d_model, n_heads = 24, 3
    ref = nn.TransformerDecoderLayer(
        d_model, n_heads, dim_feedforward=40, dropout=0.0, activation="relu",
        batch_first=True, norm_first=norm_first,
    ).eval()  # fmt: skip
    ours = DecoderBlock(d_model, n_heads, 40, pre_ln=norm_first, activation="relu")
    ours.load_from_torch(ref).eval()
    tgt, memory = randn(gen, 2, 5, d_model), randn(gen, 2, 9, d_model)
    src_keep = padding_mask(torch.tensor([9, 6]))  # (batch, 1, 1, src_len)
    causal = nn.Transformer.generate_square_subsequent_mask(5)  # float, -inf above
    with torch.no_grad():
        got = ours(tgt, memory, memory_mask=src_keep)
        want = ref(
            tgt, memory, tgt_mask=causal, tgt_is_causal=True,
            memory_key_padding_mask=~src_keep[:, 0, 0],
        )  # fmt: skip
    close(got, want)


# --- GPT ------------------------------------------------------------------------------


def test_gpt_matches_hugging_face_gpt2(gen, tiny_hf_gpt2):
    hf = tiny_hf_gpt2
    ours = GPT.from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 100, (3, 17), generator=gen)  # batch 3, odd length
    with torch.no_grad():
        got, want = ours(idx), hf(idx).logits
    assert got.shape == (3, 17, 100)
    close(got, want)
    assert count_parameters(ours.config) == sum(p.numel() for p in hf.parameters())


CONFIGS = [
    GPTConfig(),
    GPTConfig(vocab_size=50, context_length=16, d_model=32, n_heads=2, n_layers=3),
    GPTConfig(
        vocab_size=77,
        context_length=9,
        d_model=24,
        n_heads=3,
        n_layers=1,
        d_ff=40,
        bias=False,
    ),  # fmt: skip
    GPTConfig(vocab_size=10, context_length=8, d_model=8, n_heads=1, n_layers=0),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"L{c.n_layers}-b{c.bias}")
def test_parameter_count_formula(config):
    model = GPT(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


def test_gpt2_small_parameter_count():
    assert count_parameters(GPTConfig(50257, 1024, 768, 12, 12)) == 124_439_808


def test_lm_head_is_tied():
    model = GPT(GPTConfig())
    assert model.lm_head.weight is model.tok_emb.weight


def test_no_information_flows_from_the_future(gen):
    model = GPT(GPTConfig(n_layers=3)).eval()
    idx = torch.randint(0, 100, (2, 13), generator=gen)
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 100
    with torch.no_grad():
        before, after = model(idx), model(changed)
    close(before[:, :8], after[:, :8], atol=0)
    assert (before[:, 8:] - after[:, 8:]).abs().max() > 1e-4


def test_gradients_reach_every_parameter(gen):
    model = GPT(GPTConfig(n_layers=2))
    idx = torch.randint(0, 100, (2, 9), generator=gen)
    logits = model(idx)
    loss = nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten()
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_clear_errors():
    model = GPT(GPTConfig(context_length=8))
    with pytest.raises(ValueError, match="longer than context_length=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.full((1, 3), 100))
    with pytest.raises(ValueError, match=r"shape \(batch, seq\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="divisible by n_heads"):
        GPTConfig(d_model=50, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size must be a positive"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.5)
    assert GPTConfig(d_model=40, n_heads=5).d_ff == 160


def test_generate(gen):
    model = GPT(GPTConfig(context_length=8))
    idx = torch.randint(0, 100, (2, 5), generator=gen)
    out = generate(model, idx, 10, top_k=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 15) and torch.equal(out[:, :5], idx)
    greedy = generate(model, idx, 3, temperature=0)
    with torch.no_grad():
        first = model(idx)[:, -1].argmax(-1)
    assert torch.equal(greedy[:, 5], first)
    again = generate(
        model, idx, 10, top_k=5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, again)
    top1 = generate(model, idx, 4, top_k=1)  # top-1 sampling is greedy
    assert torch.equal(top1, generate(model, idx, 4, temperature=0))


def test_encoder_decoder_shapes_and_causality(gen):
    model = EncoderDecoder(20, 30, d_model=32, n_heads=4, n_layers=2).eval()
    src = torch.randint(0, 20, (3, 11), generator=gen)
    tgt = torch.randint(0, 30, (3, 7), generator=gen)
    src_keep = padding_mask(torch.tensor([11, 8, 5]))
    with torch.no_grad():
        logits = model(src, tgt, src_keep)
        changed = tgt.clone()
        changed[:, 4] = (changed[:, 4] + 1) % 30
        later = model(src, changed, src_keep)
        padded_src = src.clone()
        padded_src[2, 5:] = 0  # padding contents must not matter
        same = model(padded_src, tgt, src_keep)
    assert logits.shape == (3, 7, 30)
    close(logits[:, :4], later[:, :4], atol=0)
    close(logits, same)
    out = model.greedy_decode(src, bos_id=1, max_len=6, src_mask=src_keep)
    assert out.shape == (3, 6) and (out[:, 0] == 1).all()


# --- initialisation -------------------------------------------------------------------


def test_xavier_and_he_match_torch_statistics():
    a, b = torch.empty(300, 500), torch.empty(300, 500)
    xavier_uniform_(a, generator=torch.Generator().manual_seed(0))
    nn.init.xavier_uniform_(b, generator=torch.Generator().manual_seed(1))
    bound = math.sqrt(6 / 800)
    assert a.abs().max() <= bound and a.std() == pytest.approx(b.std().item(), rel=0.03)
    assert a.std() == pytest.approx(math.sqrt(2 / 800), rel=0.03)
    he_normal_(a, generator=torch.Generator().manual_seed(2))
    nn.init.kaiming_normal_(
        b, nonlinearity="relu", generator=torch.Generator().manual_seed(3)
    )
    assert a.std() == pytest.approx(b.std().item(), rel=0.03)
    assert a.std() == pytest.approx(math.sqrt(2 / 500), rel=0.03)
    with pytest.raises(ValueError, match=">= 2 dims"):
        xavier_uniform_(torch.empty(5))


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    config = GPTConfig(d_model=64, n_layers=8, d_ff=256)
    model = init_gpt2_(GPT(config))
    block = model.blocks[0]
    std = {n: p.std().item() for n, p in block.named_parameters() if p.dim() == 2}
    assert std["attn.q_proj.weight"] == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert std["attn.out_proj.weight"] == pytest.approx(scaled, rel=0.05)
    assert std["ff.fc2.weight"] == pytest.approx(scaled, rel=0.05)
    assert (block.ff.fc1.bias == 0).all() and (block.ln1.weight == 1).all()
