"""Deployment (Chapter 11): memory arithmetic against real tensors, left-padded
batched generation against unbatched decoding, the batching simulator, ONNX export
against PyTorch, and the HTTP service over real HTTP on localhost."""

from __future__ import annotations

import socket

import pytest
import torch

from llmbook.decoding import KVCache, generate
from llmbook.deploy import (
    LLAMA2_7B,
    LLAMA2_70B,
    ModelShape,
    Request,
    Server,
    batched_greedy,
    create_app,
    generate_over_http,
    left_pad,
    load_test,
    memory_table,
    padded_forward,
    simulate,
)
from llmbook.model import GPT, GPTConfig, count_parameters, from_pretrained


@pytest.fixture(scope="module")
def gpt():
    return from_pretrained("course-gpt").eval()


@pytest.fixture(scope="module")
def tokenizer():
    from llmbook.model import load_tokenizer

    return load_tokenizer("course-gpt")


# ---------------------------------------------------------------- memory


def test_memory_of_a_gpt_equals_its_tensors():
    config = GPTConfig(vocab_size=97, context_length=24, d_model=32, n_heads=4,
                       n_layers=3, d_ff=80)  # fmt: skip
    model = GPT(config)
    shape = ModelShape.from_gpt_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert shape.n_params() == n == count_parameters(config)
    row = memory_table(shape, "fp32", training=True, batch=2, seq_len=24)
    assert row["weights"] == sum(p.numel() * 4 for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters())
    loss = model(torch.randint(97, (2, 24))).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    state = sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for t in s.values()
        if t.dim() > 0  # the step counters are scalars
    )
    assert row["gradients"] == grads and row["optimizer"] == state
    serve = memory_table(shape, "fp32", batch=3, seq_len=20)
    assert serve["kv_cache"] == KVCache(model, 3, 20).nbytes
    assert serve["total"] == serve["weights"] + serve["kv_cache"]


def test_published_sizes_and_precisions():
    assert LLAMA2_7B.n_params() == 6_738_415_616  # Llama 2 7B's parameter count
    assert abs(LLAMA2_70B.n_params() / 68.98e9 - 1) < 0.001
    bf16 = memory_table(LLAMA2_7B, "bf16", seq_len=4096)
    int4 = memory_table(LLAMA2_7B, "int4", seq_len=4096)
    assert bf16["weights"] == 4 * int4["weights"] == 2 * LLAMA2_7B.n_params()
    assert bf16["kv_cache"] == 2 * 32 * 4096 * 4096 * 2  # 2 GiB for one sequence
    # grouped-query attention: 70B caches 8 KV heads of 64
    assert LLAMA2_70B.kv_cache_bytes(100) == 2 * 80 * 100 * 1024 * 2
    train = memory_table(LLAMA2_7B, "bf16", training=True, seq_len=4096)
    assert train["optimizer"] == 12 * LLAMA2_7B.n_params()  # m, v, master fp32
    with pytest.raises(ValueError, match="dtype"):
        memory_table(LLAMA2_7B, "fp8")
    with pytest.raises(ValueError, match="training"):
        memory_table(LLAMA2_7B, "int8", training=True)


# ---------------------------------------------------------------- batching


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
    with pytest.raises(ValueError, match="empty"):
        left_pad([[1], []])


def test_padded_forward_logits_equal_each_prompt_alone(gpt):
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(2048, (n,), generator=gen).tolist() for n in (1, 6, 11)]
    ids, mask = left_pad(prompts)
    cache = KVCache(gpt, len(prompts), ids.shape[1])
    logits = padded_forward(gpt, ids, mask, cache)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            alone = gpt(torch.tensor([prompt]))[0]
        torch.testing.assert_close(
            logits[row, -len(prompt) :], alone, rtol=1e-4, atol=1e-4
        )
    with pytest.raises(ValueError, match="key_mask"):
        padded_forward(gpt, ids, mask[:, 1:], KVCache(gpt, 3, 20))


def test_batched_greedy_equals_unbatched_token_for_token(gpt):
    gen = torch.Generator().manual_seed(11)
    lengths = torch.randint(1, 20, (6,), generator=gen).tolist()
    prompts = [torch.randint(2048, (n,), generator=gen).tolist() for n in lengths]
    out = batched_greedy(gpt, prompts, 24)
    for prompt, new in zip(prompts, out, strict=True):
        alone = generate(gpt, torch.tensor([prompt]), 24, temperature=0)
        assert new == alone[0, len(prompt) :].tolist()
    with pytest.raises(ValueError, match="context_length"):
        batched_greedy(gpt, prompts, 200)


def test_simulator_static_vs_continuous():
    def cost(b):
        return 0.010 + 0.001 * b

    one = simulate([Request(0.0, 5)], cost, max_batch=4)
    assert one["p50"] == pytest.approx(5 * cost(1))
    # two requests at once, one short one long: static keeps the short one's slot
    pair = [Request(0.0, 2), Request(0.0, 10)]
    static = simulate(pair, cost, 2, "static")
    cont = simulate(pair, cost, 2, "continuous")
    assert static["p95"] == pytest.approx(10 * cost(2))
    assert cont["p95"] == pytest.approx(2 * cost(2) + 8 * cost(1))
    gen = torch.Generator().manual_seed(3)
    lens = torch.randint(1, 60, (80,), generator=gen).tolist()
    work = [Request(0.002 * i, n) for i, n in enumerate(lens)]
    s, c = simulate(work, cost, 8, "static"), simulate(work, cost, 8, "continuous")
    assert c["throughput"] > s["throughput"] and c["mean"] < s["mean"]
    with pytest.raises(ValueError, match="policy"):
        simulate(work, cost, 8, "dynamic")
    with pytest.raises(ValueError, match="max_batch"):
        simulate(work, cost, 0)


# ---------------------------------------------------------------- export


def test_onnx_export_equals_pytorch(gpt, tmp_path):
    import numpy as np

    from llmbook.deploy.export import export_onnx, onnx_session

    session = onnx_session(export_onnx(gpt, tmp_path / "gpt.onnx"))
    gen = torch.Generator().manual_seed(5)
    for shape in ((1, 1), (3, 17), (2, 128)):  # dynamic batch and length
        ids = torch.randint(2048, shape, generator=gen)
        ours = session.run(["logits"], {"idx": ids.numpy()})[0]
        with torch.no_grad():
            ref = gpt(ids).numpy()
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-4


# ---------------------------------------------------------------- serving


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_server_streams_greedy_tokens_and_rejects_bad_input(gpt, tokenizer):
    app = create_app(gpt, tokenizer, max_prompt_tokens=32, max_new_tokens=20)
    with Server(app) as server:
        port, thread = server.port, server._thread
        assert port_is_open(port) and thread.is_alive()
        prompt = "def read_file(path):"
        got = generate_over_http(server.url, {"prompt": prompt, "max_new_tokens": 12})
        assert got["status"] == 200 and len(got["tokens"]) == 12
        ids = torch.tensor([tokenizer.encode(prompt)])
        ref = generate(gpt, ids, 12, temperature=0)[0, ids.shape[1] :].tolist()
        assert got["tokens"] == ref
        assert got["text"] == tokenizer.decode(ref)
        assert 0 < got["first_token_s"] <= got["seconds"]
        seeded = {"prompt": prompt, "max_new_tokens": 8, "temperature": 1.0,
                  "top_k": 50, "seed": 3}  # fmt: skip
        a = generate_over_http(server.url, seeded)
        b = generate_over_http(server.url, seeded)
        assert a["tokens"] == b["tokens"]  # a seeded request is reproducible
        long = generate_over_http(server.url, {"prompt": "x " * 100})
        assert long["status"] == 413 and "at most 32" in long["detail"]
        bad = [
            ({"prompt": prompt, "max_new_tokens": 0}, "max_new_tokens"),
            ({"prompt": prompt, "max_new_tokens": 21}, "max_new_tokens"),
            ({"prompt": prompt, "temperature": -1}, "temperature"),
            ({"prompt": prompt, "top_k": 5000}, "top_k"),
            ({"prompt": ""}, "prompt"),
            ({"max_new_tokens": 3}, "prompt"),
            ({"prompt": prompt, "beams": 3}, "beams"),
        ]
        for payload, field in bad:
            r = generate_over_http(server.url, payload)
            assert r["status"] == 422 and field in r["detail"], (payload, r)
        ok = generate_over_http(server.url, {"prompt": prompt, "max_new_tokens": 2})
        assert ok["status"] == 200  # still serving after the errors
    assert not port_is_open(port) and not thread.is_alive()  # stopped, not leaked


def test_load_test_counts_every_request(gpt, tokenizer):
    app = create_app(gpt, tokenizer)
    payloads = [{"prompt": f"import os{i}", "max_new_tokens": 4} for i in range(12)]
    payloads.append({"prompt": "x", "max_new_tokens": 999})  # rejected: counted
    with Server(app) as server:
        stats = load_test(server.url, payloads, concurrency=4)
        with pytest.raises(ValueError, match="concurrency"):
            load_test(server.url, payloads, concurrency=0)
    assert stats["requests"] == 13 and stats["failed"] == 1
    assert 0 < stats["p50_s"] <= stats["p95_s"]
    assert stats["tokens_per_s"] > 0


def test_bad_server_settings_are_errors(gpt, tokenizer):
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        create_app(gpt, tokenizer, max_prompt_tokens=500)
    with pytest.raises(ValueError, match="max_new_tokens"):
        create_app(gpt, tokenizer, max_new_tokens=0)
