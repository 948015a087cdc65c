"""The hooks of ``GPT.forward`` (past keys/values, inputs_embeds, position ids, an
attention mask, hidden states, attentions, the returned cache), each checked against
Hugging Face's ``GPT2LMHeadModel`` (the same weights, eager attention) or against the
plain forward of the whole sequence, on fresh seeded inputs.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from llmbook.decoding import KVCache, forward_with_cache
from llmbook.model import GPT, GPTConfig, GPTOutput, causal_mask
from llmbook.model.attention import merge_heads, split_heads

ATOL = 1e-5


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def gen(request):
    return torch.Generator().manual_seed(250 + request.param)


@pytest.fixture()
def pair(tiny_hf_gpt2):
    """(ours, HF): the same weights, eval mode."""
    return GPT.from_hf_gpt2(tiny_hf_gpt2).eval(), tiny_hf_gpt2


def close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_plain_call_returns_the_logits_tensor(pair, gen):
    ours, _ = pair
    idx = torch.randint(100, (2, 7), generator=gen)
    with torch.no_grad():
        out = ours(idx)
        full = ours(idx, output_hidden_states=True)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7, 100)
    assert isinstance(full, GPTOutput)
    assert torch.equal(full.logits, out)


def test_split_and_merge_heads_are_inverse(gen):
    x = torch.randn(3, 5, 24, generator=gen)
    heads = split_heads(x, 4)
    assert heads.shape == (3, 4, 5, 6)
    assert torch.equal(heads[:, 2], x[..., 12:18])  # head 2 is the third slice
    assert torch.equal(merge_heads(heads), x)


def test_inputs_embeds_equals_ids(pair, gen):
    ours, hf = pair
    idx = torch.randint(100, (3, 11), generator=gen)
    with torch.no_grad():
        got = ours(inputs_embeds=ours.tok_emb(idx))
        want = hf(inputs_embeds=hf.transformer.wte(idx)).logits
    close(got, ours(idx))
    close(got, want)


def test_hidden_states_and_attentions_equal_hugging_face(pair, gen):
    ours, hf = pair
    n_layers = ours.config.n_layers
    idx = torch.randint(100, (2, 13), generator=gen)
    with torch.no_grad():
        out = ours(idx, output_hidden_states=True, output_attentions=True)
        ref = hf(idx, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == n_layers + 1 == len(ref.hidden_states)
    assert len(out.attentions) == n_layers
    # HF applies the final LayerNorm to its last hidden state; ours is the raw stream
    for got, want in zip(out.hidden_states[:-1], ref.hidden_states[:-1], strict=True):
        close(got, want)
    close(ours.ln_f(out.hidden_states[-1]), ref.hidden_states[-1])
    for got, want in zip(out.attentions, ref.attentions, strict=True):
        assert got.shape == (2, 4, 13, 13)
        close(got, want)


def test_attentions_are_the_eager_softmax(pair, gen):
    """Recompute every layer's weights by hand from the hidden states."""
    ours, _ = pair
    idx = torch.randint(100, (2, 9), generator=gen)
    with torch.no_grad():
        out = ours(idx, output_hidden_states=True, output_attentions=True)
        for block, h, w in zip(
            ours.blocks, out.hidden_states, out.attentions, strict=False
        ):
            q, k, _ = block.attn.project(block.ln1(h))
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(~causal_mask(9, 9), float("-inf"))
            close(w, scores.softmax(dim=-1), atol=1e-6)


@pytest.mark.parametrize("split", [1, 6, 11])
def test_past_key_values_of_a_prefix_give_the_tail(pair, gen, split):
    """forward(tail, past=cache of head) == forward(head + tail)[:, split:]; the
    returned cache equals Hugging Face's keys and values."""
    ours, hf = pair
    idx = torch.randint(100, (2, 12), generator=gen)
    with torch.no_grad():
        full = ours(idx)
        head = ours(idx[:, :split], use_cache=True)
        tail = ours(
            idx[:, split:], past_key_values=head.past_key_values, use_cache=True
        )
        ref = hf(idx, use_cache=True).past_key_values
    close(head.logits, full[:, :split])
    close(tail.logits, full[:, split:])
    assert len(tail.past_key_values) == ours.config.n_layers
    for (k, v), layer in zip(tail.past_key_values, ref.layers, strict=True):
        assert k.shape == (2, 4, 12, 12)
        close(k, layer.keys)
        close(v, layer.values)


def test_a_shared_prefix_broadcasts_over_the_batch(pair, gen):
    """A (1, n_heads, n_past, d_head) past, as prefix tuning passes it, serves every
    row: the same as giving each row its own copy."""
    ours, _ = pair
    idx = torch.randint(100, (3, 5), generator=gen)
    with torch.no_grad():
        past = ours(idx[:1, :4], use_cache=True).past_key_values
        copies = [(k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1)) for k, v in past]
        shared = ours(idx, past_key_values=past)
        each = ours(idx, past_key_values=copies)
        row = ours(torch.cat([idx[:1, :4], idx[1:2]], dim=1))[:, 4:]
    assert torch.equal(shared, each)
    close(shared[1:2], row)


def test_a_kv_cache_equals_the_tuple_past_and_advances(pair, gen):
    ours, _ = pair
    idx = torch.randint(100, (2, 10), generator=gen)
    cache = KVCache(ours, 2, 16)
    with torch.no_grad():
        first = ours(idx[:, :7], past_key_values=cache, use_cache=True)
        assert first.past_key_values is cache and cache.length == 7
        second = ours(idx[:, 7:], past_key_values=cache)
        full = ours(idx)
    assert cache.length == 10
    close(first.logits, full[:, :7])
    close(second, full[:, 7:])


def test_left_padding_with_a_mask_equals_each_row_alone(pair, gen):
    """Left-padded rows with attention_mask and position ids from the mask give, at
    their real positions, the logits of the unpadded row; so does Hugging Face."""
    ours, hf = pair
    lengths = [9, 4, 1]
    rows = [torch.randint(1, 100, (n,), generator=gen) for n in lengths]
    idx = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, row in enumerate(rows):
        idx[i, 9 - len(row) :], mask[i, 9 - len(row) :] = row, 1
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad():
        got = ours(idx, attention_mask=mask, position_ids=position_ids)
        ref = hf(idx, attention_mask=mask, position_ids=position_ids).logits
        for i, row in enumerate(rows):
            alone = ours(row[None])[0]
            close(got[i, 9 - len(row) :], alone)
            close(ref[i, 9 - len(row) :], alone)
    assert torch.isfinite(got).all()  # the pads' rows are not empty


def test_padding_keys_are_ignored(gen):
    """Changing a padded token changes nothing that may not see it (fused kernel,
    bool mask, right padding)."""
    model = GPT(GPTConfig(fused_attention=True)).eval()
    idx = torch.randint(100, (2, 8), generator=gen)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    other = idx.clone()
    other[1, 5:] = (other[1, 5:] + 1) % 100
    with torch.no_grad():
        a = model(idx, attention_mask=mask)
        b = model(other, attention_mask=mask)
        alone = model(idx[1:, :5])
    assert torch.equal(a[0], b[0])
    close(a[1, :5], b[1, :5], atol=1e-6)
    close(a[1, :5], alone[0])


def test_cache_and_fused_kernel_agree_with_eager(gen):
    """With a cache the fused kernel runs whatever the config says: the same
    numbers as the written-out attention of the full sequence."""
    config = GPTConfig(vocab_size=61, context_length=24, n_layers=3)
    eager = GPT(config).eval()
    fused = GPT(dataclasses.replace(config, fused_attention=True)).eval()
    fused.load_state_dict(eager.state_dict())
    idx = torch.randint(61, (2, 20), generator=gen)
    with torch.no_grad():
        want = eager(idx)
        close(fused(idx), want)
        for model in (eager, fused):
            cache = KVCache(model, 2)
            parts = [forward_with_cache(model, idx[:, a:b], cache)
                     for a, b in ((0, 5), (5, 6), (6, 20))]  # fmt: skip
            close(torch.cat(parts, dim=1), want)


def test_gradients_through_a_learned_past_are_exact(gen):
    """gradcheck (float64) of the logits w.r.t. past keys/values and input
    embeddings: the path prefix and prompt tuning train through."""
    model = GPT(GPTConfig(vocab_size=13, context_length=8, d_model=8, n_heads=2))
    model = model.double().eval()
    k = torch.randn(1, 2, 3, 4, dtype=torch.double, generator=gen, requires_grad=True)
    v = torch.randn(1, 2, 3, 4, dtype=torch.double, generator=gen, requires_grad=True)
    x = torch.randn(2, 4, 8, dtype=torch.double, generator=gen, requires_grad=True)
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 1, 1, 1]])

    def f(k, v, x):
        past = [(k, v), (k * 0.5, v + 1.0)]
        return model(inputs_embeds=x, past_key_values=past, attention_mask=mask)

    assert torch.autograd.gradcheck(f, (k, v, x), eps=1e-6, atol=1e-6)


def test_clear_errors(pair):
    ours, _ = pair
    idx = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of idx and inputs_embeds"):
        ours(idx, inputs_embeds=ours.tok_emb(idx))
    with pytest.raises(ValueError, match="exactly one"):
        ours()
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        ours(inputs_embeds=torch.zeros(2, 5, 7))
    with pytest.raises(ValueError, match="attention_mask must be"):
        ours(idx, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="position_ids"):
        ours(idx, position_ids=torch.arange(4))
    past = ours(torch.zeros(1, 60, dtype=torch.long), use_cache=True).past_key_values
    with pytest.raises(ValueError, match="exceed context_length"):
        ours(idx[:1], past_key_values=past)
    with pytest.raises(ValueError, match="one .keys, values. pair per layer"):
        ours(idx, past_key_values=past[:1])
