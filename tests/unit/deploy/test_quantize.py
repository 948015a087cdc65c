"""Quantization from scratch (llmbook.deploy.quantize, Chapter 11 §2) against
PyTorch's quantized tensors and ``torch.ao`` dynamic quantization."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from llmbook.deploy import (
    QuantizedLinear,
    absmax_quantize,
    dequantize,
    dequantize_groups,
    int8_matmul,
    pack_int4,
    quantize_groups,
    quantize_model,
    serialized_bytes,
    unpack_int4,
    zeropoint_quantize,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.mark.parametrize("shape", [(7, 33), (64, 128), (3, 5, 9)])
def test_absmax_round_trip_error_is_at_most_half_a_step(gen, shape):
    x = torch.randn(shape, generator=gen) * 3
    q, scale = absmax_quantize(x)
    assert q.dtype == torch.int8 and q.shape == x.shape and scale.numel() == 1
    assert scale.item() == pytest.approx(x.abs().max().item() / 127)
    err = (dequantize(q, scale) - x).abs()
    assert err.max().item() <= scale.item() / 2 + 1e-6
    assert int(q.abs().max()) == 127  # the largest value uses the whole range


def test_per_channel_equals_torch_quantize_per_channel(gen):
    w = torch.randn(16, 40, generator=gen)
    q, scale = absmax_quantize(w, dim=0)
    assert scale.shape == (16, 1)
    theirs = torch.quantize_per_channel(
        w, scale.reshape(-1).double(), torch.zeros(16, dtype=torch.long), 0,
        torch.qint8,
    )  # fmt: skip
    assert torch.equal(q, theirs.int_repr())
    assert torch.allclose(dequantize(q, scale), theirs.dequantize(), atol=1e-6)


def test_zeropoint_equals_torch_quantize_per_tensor_and_keeps_zero_exact(gen):
    x = torch.rand(50, 20, generator=gen) * 5 - 1  # in [-1, 4): not centred
    q, scale, zero = zeropoint_quantize(x)
    assert q.dtype == torch.uint8 and int(q.min()) == 0 and int(q.max()) == 255
    theirs = torch.quantize_per_tensor(x, scale.item(), int(zero), torch.quint8)
    assert torch.equal(q, theirs.int_repr())
    err = (dequantize(q, scale, zero) - x).abs().max().item()
    assert err <= scale.item() / 2 + 1e-6
    q0, s0, z0 = zeropoint_quantize(torch.zeros(3))
    assert dequantize(q0, s0, z0).abs().max() == 0
    # on shifted data the zero point beats absmax: a finer step over the same range
    _, abs_scale = absmax_quantize(x)
    assert scale.item() < 0.7 * abs_scale.item()


def test_zero_tensor_and_zero_channel_give_zeros_not_nans(gen):
    q, scale = absmax_quantize(torch.zeros(4, 6))
    assert scale.item() == 1.0 and not q.any()
    w = torch.randn(5, 8, generator=gen)
    w[2] = 0
    q, scale = absmax_quantize(w, dim=0)
    out = dequantize(q, scale)
    assert torch.isfinite(out).all() and not out[2].any()


def test_outlier_channel_spoils_per_tensor_but_not_per_channel(gen):
    w = torch.randn(32, 64, generator=gen) * 0.02
    w[5] *= 100  # one outlier channel, as in real LLM weights
    q_t, s_t = absmax_quantize(w)
    q_c, s_c = absmax_quantize(w, dim=0)
    normal = torch.arange(32) != 5
    err_t = (dequantize(q_t, s_t) - w)[normal].abs().mean()
    err_c = (dequantize(q_c, s_c) - w)[normal].abs().mean()
    assert err_c < err_t / 20


def test_int4_groups_pack_and_beat_per_channel(gen):
    w = torch.randn(8, 64, generator=gen)
    w[:, 3] = 12.0  # an outlier input column
    q, scale = quantize_groups(w, 4, group_size=16)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 7
    assert scale.shape == (8, 4, 1)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 32)
    assert torch.equal(unpack_int4(packed), q)
    odd = torch.randint(-8, 8, (5, 6), dtype=torch.int8, generator=gen)
    assert torch.equal(unpack_int4(pack_int4(odd)), odd)
    err_g = (dequantize_groups(q, scale) - w).abs()
    assert (err_g <= scale.repeat_interleave(16, dim=1).reshape(8, 64) / 2 + 1e-6).all()
    q_c, s_c = absmax_quantize(w, bits=4, dim=0)
    err_c = (dequantize(q_c, s_c) - w).abs()
    assert err_g[:, 16:].mean() < err_c[:, 16:].mean() / 2  # groups without the outlier


@pytest.mark.parametrize("rows", [1, 6, 13])
def test_int8_matmul_equals_dequantize_then_matmul(gen, rows):
    x = torch.randn(rows, 48, generator=gen)
    w = torch.randn(24, 48, generator=gen) * 0.1
    wq, sw = absmax_quantize(w, dim=0)
    xq, sx = absmax_quantize(x, dim=0)
    reference = dequantize(xq, sx) @ dequantize(wq, sw).T
    ours = int8_matmul(x, wq, sw)
    assert ours.shape == (rows, 24) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert (ours - x @ w.T).abs().max() < 0.05  # and close to the float product
    batched = int8_matmul(x.reshape(1, rows, 48), wq, sw)
    assert torch.equal(batched[0], ours)


@pytest.mark.parametrize("mode", QuantizedLinear.MODES)
def test_quantized_linear_equals_its_dequantized_weight(gen, mode):
    linear = nn.Linear(64, 40)
    with torch.no_grad():
        linear.weight.normal_(0, 0.05, generator=gen)
    ql = QuantizedLinear(linear, mode, group_size=16)
    x = torch.randn(3, 5, 64, generator=gen)
    y = ql(x)
    assert y.shape == (3, 5, 40)
    if mode != "w8a8":  # the weight-only paths are the dequantized weight exactly
        ref = nn.functional.linear(x, ql.weight_dequantized(), linear.bias)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    # worst case: every weight off by half a step (and, for w8a8, every input)
    w_step = (ql.weight_dequantized() - linear.weight).abs()
    assert (w_step <= ql.scale.reshape(40, -1).repeat_interleave(
        64 // ql.scale.reshape(40, -1).shape[1], dim=1) / 2 + 1e-7).all()  # fmt: skip
    bound = x.abs() @ w_step.T
    if mode == "w8a8":
        x_half_step = x.abs().amax(dim=-1, keepdim=True) / 127 / 2
        bound = bound + x_half_step * ql.weight_dequantized().abs().sum(dim=1)
    err = (y - linear(x)).abs()
    assert (err <= bound + 1e-5).all()
    assert err.mean() < bound.mean() / 3  # errors mostly cancel: far from the worst


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="floating-point"):
        absmax_quantize(torch.arange(4))
    with pytest.raises(ValueError, match="bits"):
        absmax_quantize(torch.randn(4), bits=5)
    with pytest.raises(ValueError, match="dim"):
        absmax_quantize(torch.randn(4, 4), dim=2)
    with pytest.raises(ValueError, match="group_size"):
        quantize_groups(torch.randn(4, 30), group_size=16)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_int4(torch.tensor([9, 0], dtype=torch.int8))
    with pytest.raises(ValueError, match="features"):
        int8_matmul(torch.randn(2, 5), torch.zeros(3, 4, dtype=torch.int8),
                    torch.ones(3, 1))  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        QuantizedLinear(nn.Linear(4, 4), "fp8")


@pytest.fixture(scope="module")
def course_gpt_and_windows():
    from llmbook.data import course_splits
    from llmbook.model import from_pretrained, load_tokenizer

    model = from_pretrained("course-gpt").eval()
    tok = load_tokenizer("course-gpt")
    text = "\n".join(course_splits().val[:60])
    ids = torch.tensor(tok.encode(text)[: 16 * 129]).reshape(16, 129)
    return model, ids


def nll(model, ids):
    with torch.no_grad():
        logits = model(ids[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def test_quantized_course_gpt_matches_torch_ao_dynamic(course_gpt_and_windows):
    """Our w8a8 course GPT and torch.ao's dynamic int8 version (the same scheme:
    int8 weights per channel vs per tensor, activations quantized on the fly) lose
    about the same perplexity on real validation text, and both stay within 2%."""
    import copy

    model, ids = course_gpt_and_windows
    base = nll(model, ids).exp().item()
    ours = quantize_model(copy.deepcopy(model), "w8a8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        theirs = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, torch.qint8)
    ppl_ours = nll(ours, ids).exp().item()
    ppl_theirs = nll(theirs, ids).exp().item()
    assert 15 < base < 60  # the shipped model on its validation text
    assert abs(ppl_ours / base - 1) < 0.02 and abs(ppl_theirs / base - 1) < 0.02
    w4 = quantize_model(copy.deepcopy(model), "w4", group_size=32)
    assert nll(w4, ids).exp().item() > ppl_ours  # 4 bits cost more than 8
    fp32, int8 = serialized_bytes(model), serialized_bytes(ours)
    assert 0.3 < int8 / fp32 < 0.7  # linears at 1 byte; embeddings stay fp32
