"""llmbook.train.optim against torch.optim, transformers' schedule and torch's clipping.

The optimisers are compared step by step with ``torch.optim.SGD`` / ``Adam`` /
``AdamW`` on a tiny ``llmbook.model.GPT`` trained for 25 steps on seeded random
token batches (batch 3, odd length 7). Both copies start from the same weights and see
the same batches, so any difference is floating-point rounding: the tolerance is
ATOL = 1e-6 on every parameter after every step (measured: at most 3e-7).

The model has ``bias=False``. With biases, the key projection's bias has a true
gradient of exactly 0 (softmax ignores a constant added to every score of a row); its
computed gradient is rounding noise (~1e-13), which Adam divides by its own size and
turns into steps of +-lr. Any last-bit difference between two implementations then
flips those steps, and the copies drift apart by ~1e-3 although both are correct.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_gpt
from torch import nn

from llmbook.model import GPT, GPTConfig
from llmbook.train import optim, schedule

ATOL = 1e-6
STEPS = 25
CONFIG = GPTConfig(
    vocab_size=31, context_length=16, d_model=16, n_heads=2, n_layers=1, bias=False
)


def batches(seed: int, n: int = STEPS):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        idx = torch.randint(0, CONFIG.vocab_size, (3, 8), generator=gen)
        yield idx[:, :-1], idx[:, 1:]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> None:
    opt.zero_grad()
    logits = model(x)
    F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
    opt.step()


def max_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        (p - q).abs().max().item()
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2)),
    (optim.Adam, torch.optim.Adam, dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.3)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "ours, ref, kwargs", CASES, ids=lambda v: str(v) if isinstance(v, dict) else None
)
def test_optimiser_matches_torch_step_by_step(ours, ref, kwargs, seed):
    a = random_gpt(seed, config=CONFIG)
    b = copy.deepcopy(a)
    opt_a, opt_b = ours(a.parameters(), **kwargs), ref(b.parameters(), **kwargs)
    for step, (x, y) in enumerate(batches(seed)):
        train_step(a, opt_a, x, y)
        train_step(b, opt_b, x, y)
        diff = max_diff(a, b)
        assert diff < ATOL, f"{ours.__name__} {kwargs}: step {step} differs by {diff}"
    assert max_diff(a, random_gpt(seed, config=CONFIG)) > 1e-3, (
        "the parameters did not move"
    )


def test_param_groups_with_different_settings_match_torch():
    a = random_gpt(2, config=CONFIG)
    b = copy.deepcopy(a)
    opt_a = optim.AdamW(optim.param_groups_for_weight_decay(a, 0.1), lr=1e-2)
    opt_b = torch.optim.AdamW(optim.param_groups_for_weight_decay(b, 0.1), lr=1e-2)
    opt_a.param_groups[1]["lr"] = opt_b.param_groups[1]["lr"] = 3e-3
    for x, y in batches(2):
        train_step(a, opt_a, x, y)
        train_step(b, opt_b, x, y)
    assert max_diff(a, b) < ATOL


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_state_dict_round_trip_resumes_exactly(name, tmp_path):
    cls = getattr(optim, name)
    kwargs = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    data = list(batches(3, 12))

    straight = random_gpt(3, config=CONFIG)
    opt = cls(straight.parameters(), **kwargs)
    for x, y in data:
        train_step(straight, opt, x, y)

    resumed = random_gpt(3, config=CONFIG)
    opt = cls(resumed.parameters(), **kwargs)
    for x, y in data[:5]:
        train_step(resumed, opt, x, y)
    torch.save({"model": resumed.state_dict(), "opt": opt.state_dict()}, tmp_path / "c")
    del resumed, opt

    checkpoint = torch.load(tmp_path / "c")
    # different weights: everything must come from the file
    resumed = random_gpt(99, config=CONFIG)
    resumed.load_state_dict(checkpoint["model"])
    opt = cls(resumed.parameters(), **kwargs)
    opt.load_state_dict(checkpoint["opt"])
    for x, y in data[5:]:
        train_step(resumed, opt, x, y)
    assert max_diff(straight, resumed) == 0.0


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
def test_first_adam_step_moves_each_coordinate_by_about_lr(cls, scale):
    torch.manual_seed(0)
    p = nn.Parameter(torch.zeros(50))  # at 0, the step is not rounded by the value
    start = p.detach().clone()
    p.grad = scale * torch.randn(50)
    cls([p], lr=1e-3, weight_decay=0.0).step()
    # bias correction: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)
    step = (p.detach() - start).abs()
    expected = 1e-3 * p.grad.abs() / (p.grad.abs() + 1e-8)
    torch.testing.assert_close(step, expected, atol=1e-9, rtol=1e-4)
    assert step.min() > 0.9e-3 if scale >= 1 else step.max() <= 1e-3


def test_adam_with_zero_gradients_leaves_parameters_unchanged():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4, 5))
    start = p.detach().clone()
    opt = optim.Adam([p], lr=0.1)
    for _ in range(5):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert torch.equal(p.detach(), start)
    assert opt.state[p]["step"] == 5


def test_parameters_without_grad_are_skipped():
    used, unused = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    used.grad = torch.ones(3)
    for opt in (
        optim.SGD([used, unused], lr=0.1, momentum=0.9, weight_decay=0.1),
        optim.AdamW([used, unused], lr=0.1, weight_decay=0.1),
    ):
        opt.step()
        assert torch.equal(unused.detach(), torch.ones(3))
        assert unused not in opt.state or not opt.state[unused]
    assert not torch.equal(used.detach(), torch.ones(3))


def test_closure_is_evaluated_and_returned():
    p = nn.Parameter(torch.tensor([2.0]))
    opt = optim.Adam([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(4.0)
    assert p.item() == pytest.approx(1.9)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ps: optim.SGD(ps, lr=-0.1), "lr must be >= 0"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=1.0), "momentum"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "momentum"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay"),
        (lambda ps: optim.Adam(ps, lr=-1e-3), "lr must be >= 0"),
        (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), r"betas\[0\]"),
        (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), r"betas\[1\]"),
        (lambda ps: optim.Adam(ps, betas=(0.9,)), "pair"),
        (lambda ps: optim.Adam(ps, eps=0.0), "eps must be > 0"),
        (lambda ps: optim.AdamW(ps, weight_decay=-0.01), "weight_decay"),
        (lambda ps: optim.AdamW(ps, lr=float("nan")), "lr"),
    ],
)
def test_bad_optimiser_arguments_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make([nn.Parameter(torch.zeros(2))])


def test_non_numeric_lr_is_rejected():
    with pytest.raises(TypeError, match="lr must be a number"):
        optim.Adam([nn.Parameter(torch.zeros(2))], lr="0.1")


# --- learning-rate schedule ---------------------------------------------------------


@pytest.mark.parametrize("warmup, total", [(10, 100), (0, 37), (7, 8), (5, 5), (1, 2)])
def test_cosine_schedule_matches_transformers(warmup, total):
    transformers = pytest.importorskip("transformers")
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=3e-4)
    sched = transformers.get_cosine_schedule_with_warmup(opt, warmup, total)
    ours = schedule.cosine_lambda(warmup_steps=warmup, total_steps=total)
    for step in range(total + 1):
        expected = opt.param_groups[0]["lr"]
        got = schedule.cosine_schedule(
            step, max_lr=3e-4, warmup_steps=warmup, total_steps=total
        )
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), step
        assert 3e-4 * ours(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()


def test_cosine_schedule_endpoints_and_min_lr():
    kw = dict(max_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)
    lr = [schedule.cosine_schedule(s, **kw) for s in range(200)]
    assert lr[0] == 0.0  # warm-up starts at 0, not at min_lr
    assert lr[5] == pytest.approx(5e-4)
    assert lr[10] == pytest.approx(1e-3)
    assert lr[60] == pytest.approx((1e-3 + 1e-4) / 2)  # half way through the decay
    assert lr[110] == pytest.approx(1e-4)
    assert all(x == pytest.approx(1e-4) for x in lr[110:])
    assert all(a <= b for a, b in zip(lr[:10], lr[1:11], strict=True))  # rising warm-up
    assert all(
        a >= b for a, b in zip(lr[10:110], lr[11:111], strict=True)
    )  # falling decay
    assert min(lr[10:]) == pytest.approx(1e-4)


def test_no_warmup_starts_at_max_lr():
    assert schedule.cosine_schedule(0, max_lr=2.0, warmup_steps=0, total_steps=4) == 2.0


def test_cosine_lambda_with_lambdalr_and_min_ratio():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    f = schedule.cosine_lambda(warmup_steps=3, total_steps=9, min_lr_ratio=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    for step in range(15):
        expected = schedule.cosine_schedule(
            step, max_lr=0.5, warmup_steps=3, total_steps=9, min_lr=0.05
        )
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(warmup_steps=20, total_steps=10), ValueError, "warmup_steps"),
        (dict(warmup_steps=-1, total_steps=10), ValueError, "warmup_steps"),
        (dict(total_steps=0), ValueError, "total_steps"),
        (dict(step=-1), ValueError, "step must be >= 0"),
        (dict(max_lr=-1.0), ValueError, "max_lr"),
        (dict(min_lr=-1e-5), ValueError, "min_lr"),
        (dict(min_lr=1.0), ValueError, "min_lr"),
        (dict(step=1.5), TypeError, "step must be an int"),
        (dict(total_steps=10.0), TypeError, "total_steps must be an int"),
    ],
)
def test_bad_schedule_arguments_are_rejected(kwargs, error, message):
    args = dict(step=3, max_lr=1e-3, warmup_steps=2, total_steps=10, min_lr=0.0)
    args.update(kwargs)
    step = args.pop("step")
    with pytest.raises(error, match=message):
        schedule.cosine_schedule(step, **args)


def test_cosine_lambda_checks_its_arguments_immediately():
    with pytest.raises(ValueError, match="warmup_steps"):
        schedule.cosine_lambda(warmup_steps=11, total_steps=10)


# --- gradient clipping --------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e3])
@pytest.mark.parametrize("seed", [0, 1])
def test_clip_grad_norm_matches_torch(max_norm, seed):
    a = random_gpt(seed, config=CONFIG)
    b = copy.deepcopy(a)
    x, y = next(batches(seed))
    for model in (a, b):
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
    unclipped = [p.grad.clone() for p in a.parameters()]
    ours = optim.clip_grad_norm(a.parameters(), max_norm)
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), max_norm)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-7, rtol=1e-6)
    after = torch.linalg.vector_norm(
        torch.cat([p.grad.ravel() for p in a.parameters()])
    )
    if ours > max_norm:
        assert after == pytest.approx(max_norm, rel=1e-4)
    else:  # below the threshold: gradients untouched, bit for bit
        assert all(
            torch.equal(p.grad, g)
            for p, g in zip(a.parameters(), unclipped, strict=True)
        )


def test_clip_grad_norm_single_tensor_none_grads_and_errors():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    q = nn.Parameter(torch.zeros(2))  # no grad: skipped
    assert optim.clip_grad_norm([p, q], 1.0).item() == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]))
    assert optim.clip_grad_norm(p, 10.0).item() == pytest.approx(1.0, rel=1e-5)
    assert optim.clip_grad_norm([q], 1.0).item() == 0.0
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        optim.clip_grad_norm([p], 0.0)
    p.grad = torch.tensor([math.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm([p], 1.0, error_if_nonfinite=True)


# --- regularisation -----------------------------------------------------------------


def test_penalties_cover_weight_matrices_only():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Embedding(10, 4), nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)
    )
    matrices = [model[0].weight, model[1].weight, model[3].weight]
    l1 = sum(w.abs().sum() for w in matrices)
    l2 = sum((w**2).sum() for w in matrices)
    torch.testing.assert_close(optim.l1_penalty(model), l1)
    torch.testing.assert_close(optim.l2_penalty(model), l2)
    bias = model[1].bias
    torch.testing.assert_close(optim.l1_penalty([bias]), bias.abs().sum())
    torch.testing.assert_close(optim.l2_penalty(bias), (bias**2).sum())
    assert optim.l1_penalty(nn.LayerNorm(3)).item() == 0.0


def test_l2_penalty_gradient_is_sgd_weight_decay():
    torch.manual_seed(0)
    a = nn.Linear(5, 1, bias=False)
    b = copy.deepcopy(a)
    x, y = torch.randn(8, 5), torch.randn(8, 1)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=2 * 0.03)
    for _ in range(10):
        opt_a.zero_grad()
        (F.mse_loss(a(x), y) + 0.03 * optim.l2_penalty(a)).backward()
        opt_a.step()
        opt_b.zero_grad()
        F.mse_loss(b(x), y).backward()
        opt_b.step()
    assert max_diff(a, b) < ATOL


def test_param_groups_for_weight_decay_splits_by_dimension():
    model = GPT(GPTConfig(vocab_size=20, d_model=8, n_heads=2, n_layers=1))
    decay, no_decay = optim.param_groups_for_weight_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    n_groups = len(decay["params"]) + len(no_decay["params"])
    assert n_groups == len(list(model.parameters()))  # tied weights counted once
    model.lm_head.weight.requires_grad_(False)
    decay, _ = optim.param_groups_for_weight_decay(model, 0.1)
    assert all(p is not model.lm_head.weight for p in decay["params"])
    with pytest.raises(ValueError, match="weight_decay"):
        optim.param_groups_for_weight_decay(model, -0.1)
