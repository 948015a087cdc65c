"""The mixture-of-experts layer of Chapter 10 (``llmbook.model.moe``).

References: ``transformers``' ``MixtralSparseMoeBlock`` (top-k routing with
renormalised gates, SwiGLU experts) and ``load_balancing_loss_func``, and its Switch
Transformers code (``SwitchTransformersTop1Router`` capacity rule,
``SwitchTransformersSparseMLP``, ``router_z_loss_func`` and the Switch balance loss),
with the same seeded random weights copied across; tolerance 1e-5 on outputs.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from notebook_defs import notebook_definitions
from transformers import MixtralConfig, SwitchTransformersConfig
from transformers.models.mixtral import modeling_mixtral as mixtral
from transformers.models.switch_transformers import (
    modeling_switch_transformers as switch,
)

from llmbook.model import FeedForward, GPTConfig
from llmbook.model.gpt import model_flops_per_token
from llmbook.model.moe import (
    MoEConfig,
    MoEFeedForward,
    balance_loss,
    capacity_mask,
    expert_capacity,
    moe_aux_loss,
    moe_flops_per_token,
    moe_gpt,
    moe_layers,
    moe_parameter_counts,
    router_z_loss,
    top_k_gates,
)


def random_moe(seed, d_model, d_ff, n_experts, top_k, **kw):
    torch.manual_seed(seed)
    layer = MoEFeedForward(d_model, d_ff, n_experts, top_k, **kw).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.4)
    return layer


def to_mixtral(layer):
    config = MixtralConfig(
        hidden_size=layer.d_model,
        intermediate_size=layer.experts[0].gate.out_features,
        num_local_experts=layer.n_experts,
        num_experts_per_tok=layer.top_k,
        router_jitter_noise=0.0,
    )
    ref = mixtral.MixtralSparseMoeBlock(config).eval()
    with torch.no_grad():
        ref.gate.weight.copy_(layer.router.weight)
        gate_up = [torch.cat([e.gate.weight, e.up.weight]) for e in layer.experts]
        ref.experts.gate_up_proj.copy_(torch.stack(gate_up))
        ref.experts.down_proj.copy_(torch.stack([e.down.weight for e in layer.experts]))
    return ref


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("shape", "n_experts", "top_k"),
    [((2, 9, 16), 4, 1), ((3, 7, 16), 4, 2), ((1, 13, 24), 8, 2), ((5, 24), 6, 3)],
)
def test_matches_mixtral_sparse_moe_block(seed, shape, n_experts, top_k):
    d = shape[-1]
    layer = random_moe(seed, d, 2 * d - 3, n_experts, top_k, expert="swiglu")
    ref = to_mixtral(layer)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(100 + seed))
    x3 = x if x.ndim == 3 else x[None]
    theirs = ref(x3.clone()).reshape(shape)
    mine = layer(x)
    assert mine.shape == x.shape
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    # the router agrees too: Mixtral's router returns logits, gates and indices
    logits, gates, index = ref.gate(x.reshape(-1, d))
    torch.testing.assert_close(layer.routing.logits, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.routing.gates, gates, rtol=0, atol=1e-6)
    assert torch.equal(layer.routing.index, index)


@pytest.mark.filterwarnings("ignore")
def test_gradients_match_mixtral():
    layer = random_moe(3, 16, 20, 4, 2, expert="swiglu").train()
    ref = to_mixtral(layer).train()
    x = torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(5))
    w = torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(6))
    (layer(x) * w).sum().backward()
    (ref(x.clone()) * w).sum().backward()
    torch.testing.assert_close(
        layer.router.weight.grad, ref.gate.weight.grad, atol=1e-5, rtol=0
    )
    for e, expert in enumerate(layer.experts):
        mine = torch.cat([expert.gate.weight.grad, expert.up.weight.grad])
        torch.testing.assert_close(
            mine, ref.experts.gate_up_proj.grad[e], atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            expert.down.weight.grad, ref.experts.down_proj.grad[e], atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_top1_with_one_expert_is_the_dense_ffn(seed):
    layer = random_moe(seed, 12, 30, 1, 1)
    dense = FeedForward(12, 30)
    dense.load_state_dict(layer.experts[0].state_dict())
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(layer(x), dense(x), rtol=0, atol=1e-6)
    assert torch.equal(layer.routing.gates, torch.ones(15, 1))


def test_top_k_gates_by_hand():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    gates, index = top_k_gates(probs, 2)
    assert index.tolist() == [[1, 2], [0, 2]]
    torch.testing.assert_close(
        gates, torch.tensor([[0.6 / 0.9, 0.3 / 0.9], [0.625, 0.375]])
    )
    raw, _ = top_k_gates(probs, 2, renormalize=False)
    torch.testing.assert_close(raw, torch.tensor([[0.6, 0.3], [0.5, 0.3]]))
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(50, 7, generator=gen).softmax(-1)
    for k in (1, 3, 7):
        gates, _ = top_k_gates(probs, k)
        torch.testing.assert_close(gates.sum(-1), torch.ones(50))


def test_balance_loss_by_hand_and_against_switch_and_mixtral():
    # 4 tokens, 2 experts: first choices 0, 0, 0, 1 -> f = (3/4, 1/4)
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    index = probs.argmax(-1, keepdim=True)
    p = probs.mean(0)  # (0.6, 0.4)
    expected = 2 * (0.75 * p[0] + 0.25 * p[1])  # 2 * (0.45 + 0.1) = 1.1
    torch.testing.assert_close(balance_loss(probs, index), expected)
    assert abs(expected.item() - 1.1) < 1e-6
    gen = torch.Generator().manual_seed(1)
    for n_experts, k in ((4, 1), (8, 1), (8, 2), (5, 3)):
        logits = torch.randn(37, n_experts, generator=gen) * 2
        probs = logits.softmax(-1)
        _, index = probs.topk(k, dim=-1)
        mine = balance_loss(probs, index)
        hf_mixtral = mixtral.load_balancing_loss_func((logits,), n_experts, k)
        torch.testing.assert_close(k * mine, hf_mixtral, rtol=1e-6, atol=1e-6)
        if k == 1:
            hf_switch = switch.load_balancing_loss_func(probs[None], index[None, :, 0])
            torch.testing.assert_close(mine, hf_switch, rtol=1e-6, atol=1e-6)


def test_balance_loss_is_one_when_uniform_and_grows_with_skew():
    n = 4
    probs = torch.full((8, n), 1 / n)
    index = torch.arange(8)[:, None] % n  # each expert twice
    assert balance_loss(probs, index).item() == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(400, n, generator=gen)
    values = []
    for skew in (0.0, 1.0, 2.0, 4.0, 20.0):
        logits = base.clone()
        logits[:, 0] += skew
        probs = logits.softmax(-1)
        values.append(balance_loss(probs, probs.argmax(-1, keepdim=True)).item())
    assert values == sorted(values), values
    assert values[-1] == pytest.approx(n, rel=1e-3)  # everything on expert 0


def test_balance_loss_gradient_flows_through_probabilities_only():
    logits = torch.randn(20, 4, generator=torch.Generator().manual_seed(3))
    logits[:, 2] += 1.5
    logits.requires_grad_(True)
    probs = logits.softmax(-1)
    loss = balance_loss(probs, probs.topk(2, -1).indices)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    # the most loaded expert (2) has its mean logit pushed down
    assert logits.grad[:, 2].sum() > 0


def test_router_z_loss_matches_switch():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 11, 6, generator=gen) * 3
    torch.testing.assert_close(router_z_loss(logits), switch.router_z_loss_func(logits))
    by_hand = sum(
        math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits[0, :2].tolist()
    )
    assert router_z_loss(logits[0, :2]).item() == pytest.approx(by_hand / 2, rel=1e-5)
    # shifting every logit by c changes the z-loss, not the routing
    assert router_z_loss(logits + 5) > router_z_loss(logits)


def test_capacity_by_hand():
    assert expert_capacity(12, 4, 1, 1.0) == 3
    assert expert_capacity(12, 4, 2, 1.25) == 8
    assert expert_capacity(10, 4, 1, 1.0) == 3  # rounded up
    index = torch.tensor([[0], [0], [1], [0], [0], [1]])
    assert capacity_mask(index, 2, 2)[:, 0].tolist() == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]
    # top-2: all first choices are placed before any second choice
    index = torch.tensor([[0, 1], [0, 1], [1, 0]])
    assert capacity_mask(index, 2, 2).tolist() == [
        [True, True],
        [True, False],
        [True, False],
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.5])
def test_capacity_drops_like_switch_transformers(seed, capacity_factor):
    batch, seq, d, n_experts = 3, 12, 16, 4
    layer = random_moe(
        seed, d, 24, n_experts, 1, bias=False, activation="relu", renormalize=False,
        capacity_factor=capacity_factor,
    )  # fmt: skip
    cap = expert_capacity(seq, n_experts, 1, capacity_factor)
    config = SwitchTransformersConfig(
        d_model=d, d_ff=24, num_experts=n_experts, expert_capacity=cap,
        router_jitter_noise=0.0, dropout_rate=0.0, dense_act_fn="relu",
    )  # fmt: skip
    ref = switch.SwitchTransformersSparseMLP(config).eval()
    with torch.no_grad():
        ref.router.classifier.weight.copy_(layer.router.weight)
        for e, expert in enumerate(layer.experts):
            ref.experts[f"expert_{e}"].wi.weight.copy_(expert.fc1.weight)
            ref.experts[f"expert_{e}"].wo.weight.copy_(expert.fc2.weight)
    x = torch.randn(batch, seq, d, generator=torch.Generator().manual_seed(seed))
    theirs = ref(x.clone())
    mine = layer(x)
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    dispatch, _, _ = ref.router(
        x.clone()
    )  # (batch, seq, n_experts) one-hot, 0: dropped
    assert torch.equal(layer.routing.kept[:, 0], dispatch.sum(-1).flatten().bool())
    dropped = ~layer.routing.kept[:, 0]
    if capacity_factor < 1:
        assert dropped.any()
    # a dropped token gets nothing from the layer: the residual carries it unchanged
    flat_out = mine.reshape(-1, d)
    assert torch.equal(flat_out[dropped], torch.zeros_like(flat_out[dropped]))
    residual = x + mine
    assert torch.equal(residual.reshape(-1, d)[dropped], x.reshape(-1, d)[dropped])
    loads = torch.bincount(layer.routing.index[layer.routing.kept], minlength=n_experts)
    assert int(loads.max()) <= cap * batch


def test_top2_capacity_per_sequence():
    layer = random_moe(7, 8, 16, 4, 2, capacity_factor=1.0)
    x = torch.randn(2, 10, 8, generator=torch.Generator().manual_seed(7))
    layer(x)
    cap = expert_capacity(10, 4, 2, 1.0)
    index, kept = layer.routing.index, layer.routing.kept
    for row in range(2):
        rows = slice(10 * row, 10 * (row + 1))
        per_expert = torch.bincount(index[rows][kept[rows]], minlength=4)
        assert int(per_expert.max()) <= cap
        assert torch.equal(kept[rows], capacity_mask(index[rows], 4, cap))


def test_noisy_gating():
    layer = random_moe(0, 8, 16, 4, 1, noisy=True)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    layer.eval()
    a, b = layer(x), layer(x)
    assert torch.equal(a, b)  # no noise in evaluation
    torch.testing.assert_close(layer.routing.logits, layer.router(x))
    layer.train()
    torch.manual_seed(1)
    layer(x)
    noise = layer.routing.logits - layer.router(x)
    scale = torch.nn.functional.softplus(layer.noise(x))
    z = (noise / scale).flatten()
    assert abs(z.mean().item()) < 0.15 and abs(z.std().item() - 1) < 0.15
    loss = balance_loss(layer.routing.probs, layer.routing.index)
    loss.backward()
    assert layer.noise.weight.grad.abs().sum() > 0  # the noise scale is learned


def test_gradients_reach_router_and_used_experts():
    layer = random_moe(2, 8, 16, 4, 2).train()
    x = torch.randn(
        3, 6, 8, generator=torch.Generator().manual_seed(2), requires_grad=True
    )
    layer(x).pow(2).sum().backward()
    assert layer.router.weight.grad.abs().sum() > 0
    used = set(layer.routing.index.flatten().tolist())
    for e, expert in enumerate(layer.experts):
        has = (
            expert.fc1.weight.grad is not None
            and expert.fc1.weight.grad.abs().sum() > 0
        )
        assert has == (e in used)
    assert x.grad.abs().sum() > 0


def test_moe_gpt_sizes_flops_and_aux_loss():
    config = GPTConfig(
        vocab_size=50, context_length=16, d_model=16, n_heads=2, n_layers=2
    )
    moe = MoEConfig(n_experts=4, top_k=2, d_expert=32, z_coef=1e-3)
    torch.manual_seed(0)
    model = moe_gpt(config, moe)
    total, active = moe_parameter_counts(config, moe)
    assert total == sum(p.numel() for p in model.parameters())
    per_expert = sum(p.numel() for p in moe_layers(model)[0].experts[0].parameters())
    assert total - active == 2 * (4 - 2) * per_expert
    ids = torch.randint(50, (3, 16), generator=torch.Generator().manual_seed(0))
    logits = model(ids)
    assert logits.shape == (3, 16, 50)
    aux = moe_aux_loss(model, moe)
    expected = sum(
        0.01 * balance_loss(m.routing.probs, m.routing.index)
        + 1e-3 * router_z_loss(m.routing.logits)
        for m in moe_layers(model)
    )
    torch.testing.assert_close(aux, expected)
    aux.backward()
    assert all(m.router.weight.grad is not None for m in moe_layers(model))
    # one expert, top-1: the FLOPs of the dense model plus the router's
    one = MoEConfig(n_experts=1, top_k=1)
    router = 3 * 2 * config.n_layers * config.d_model
    assert moe_flops_per_token(config, one) == model_flops_per_token(config) + router
    assert moe_flops_per_token(config, moe, training=False) * 3 == moe_flops_per_token(
        config, moe
    )


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(8, 16, 4, 5)
    with pytest.raises(ValueError, match="expert"):
        MoEFeedForward(8, 16, 4, 1, expert="moe")
    with pytest.raises(ValueError, match="capacity_factor"):
        MoEFeedForward(8, 16, 4, 1, capacity_factor=0)
    with pytest.raises(ValueError, match="last dim 8"):
        MoEFeedForward(8, 16, 4, 1)(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="k must be"):
        top_k_gates(torch.rand(3, 4).softmax(-1), 0)
    with pytest.raises(ValueError, match="index must be"):
        balance_loss(torch.rand(3, 4), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="capacity_factor"):
        expert_capacity(10, 2, 1, -1.0)
    with pytest.raises(ValueError, match="n_experts"):
        MoEConfig(n_experts=0)
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(n_experts=2, top_k=3)


def test_shipped_study_results_are_consistent():
    from llmbook.moe_study import BASE, DEFAULT_RUNS, RESULTS, RUNS, build

    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    assert set(DEFAULT_RUNS) <= set(results["runs"]) <= set(RUNS)
    for name, run in results["runs"].items():
        model, _, sizes = build(RUNS[name])
        assert (
            run["total"] == sizes["total"] == sum(p.numel() for p in model.parameters())
        )
        assert run["active"] == sizes["active"]
        assert run["flops"] == [
            s * run["tokens_per_step"] * run["flops_per_token"] for s in run["steps"]
        ]
        assert all(1 < p < BASE.vocab_size for p in run["val_ppl"])
        assert run["val_ppl"][-1] < run["val_ppl"][0]
        for loads in run["load"]:
            assert all(sum(layer) == pytest.approx(1.0) for layer in loads)
    runs = results["runs"]
    assert runs["moe-4x256"]["active"] < runs["dense"]["active"] + 1000
    assert runs["moe-4x256"]["total"] == pytest.approx(
        runs["dense-wide"]["total"], rel=0.01
    )


CHAPTER = Path(__file__).resolve().parents[3] / "chapters" / "10_moe.ipynb"


@pytest.fixture(scope="module")
def chapter():
    names = ["top_k_route", "switch_balance_loss", "SimpleMoE"]
    return notebook_definitions(CHAPTER, names)


@pytest.mark.parametrize("seed", [0, 1])
def test_chapter_inline_code_agrees_with_the_package(chapter, seed):
    gen = torch.Generator().manual_seed(900 + seed)
    probs = torch.randn(23, 6, generator=gen).softmax(-1)
    for k in (1, 2, 4):
        mine = chapter.top_k_route(probs, k)
        theirs = top_k_gates(probs, k)
        assert torch.equal(mine[1], theirs[1])
        torch.testing.assert_close(mine[0], theirs[0], rtol=0, atol=1e-7)
        index = theirs[1]
        torch.testing.assert_close(
            chapter.switch_balance_loss(probs, index), balance_loss(probs, index)
        )
    torch.manual_seed(seed)
    simple = chapter.SimpleMoE(d_model=12, d_ff=20, n_experts=5, k=2)
    packaged = MoEFeedForward(12, 20, n_experts=5, top_k=2)
    packaged.load_state_dict(simple.state_dict())
    x = torch.randn(2, 7, 12, generator=gen)
    torch.testing.assert_close(simple(x), packaged(x), rtol=0, atol=1e-6)
