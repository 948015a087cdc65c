"""Teach, then import: Chapter 5's inline Adam / AdamW agree with llmbook.train.optim.

Chapter 5 writes Adam inline (``adam_update`` plus the ``Adam`` class, and ``AdamW`` as
a one-flag subclass); ``src/llmbook/optim.py`` holds the package copy. Both train the
same small network on the same seeded random batches (batch 5, odd widths, several
parameter groups, a parameter without a gradient), and must agree after every step.

Tolerance: float32 within 1e-6 (the two copies run the same operations in the same
order, so in practice they agree exactly).
"""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from notebook_defs import notebook_definitions
from torch import nn

import llmbook.train.optim as pkg

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "chapters" / "05_pretraining.ipynb"
NAMES = ["Adam", "AdamW"]
ATOL = 1e-6


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, NAMES)


def make_pair(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(7, 13), nn.LayerNorm(13), nn.GELU(), nn.Linear(13, 3))
    b = nn.Sequential(nn.Linear(7, 13), nn.LayerNorm(13), nn.GELU(), nn.Linear(13, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def groups(model: nn.Module, **second) -> list[dict]:
    """Two groups (matrices / the rest); the second with its own settings."""
    decay, rest = pkg.param_groups_for_weight_decay(model, 0.05)
    rest.update(second)
    return [decay, rest]


def run(model: nn.Module, opt: torch.optim.Optimizer, seed: int, steps: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(5, 7, generator=gen)
        y = torch.randint(0, 3, (5,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        model[1].bias.grad = None  # a parameter without a gradient is skipped
        opt.step()


def max_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        (p - q).abs().max().item()
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("Adam", dict(lr=1e-2)),
        ("Adam", dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
        ("AdamW", dict(lr=1e-2)),
        ("AdamW", dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)),
    ],
)
def test_notebook_optimiser_matches_package_step_by_step(nb, name, kwargs, seed):
    a, b = make_pair(seed)
    ours = getattr(nb, name)(groups(a, lr=2e-3), **kwargs)
    theirs = getattr(pkg, name)(groups(b, lr=2e-3), **kwargs)
    bias_before = a[1].bias.detach().clone()
    for step in range(20):
        run(a, ours, seed + step, 1)
        run(b, theirs, seed + step, 1)
        assert max_diff(a, b) < ATOL, f"{name} {kwargs}: step {step}"
    assert torch.equal(a[1].bias.detach(), bias_before)
    assert max_diff(a, make_pair(seed)[0]) > 1e-3, "the parameters did not move"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_and_package_checkpoints_are_interchangeable(nb, name):
    a, b = make_pair(3)
    theirs = getattr(pkg, name)(b.parameters(), lr=1e-2)
    run(b, theirs, 3, 5)
    a.load_state_dict(b.state_dict())
    ours = getattr(nb, name)(a.parameters(), lr=1e-2)
    # same state names (step, exp_avg, exp_avg_sq); deepcopy, because a state_dict
    # holds references to the live moment tensors, which would then be shared
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    run(a, ours, 4, 5)
    run(b, theirs, 4, 5)
    assert max_diff(a, b) < ATOL


def test_the_definitions_come_from_the_notebook(nb):
    for name in NAMES:
        assert getattr(nb, name).__module__.startswith("notebook:")
        assert getattr(nb, name) is not getattr(pkg, name)


def test_notebook_adam_first_step_is_lr_per_coordinate(nb):
    p = nn.Parameter(torch.zeros(20))
    p.grad = 1e4 * torch.randn(20, generator=torch.Generator().manual_seed(0))
    nb.Adam([p], lr=1e-3).step()
    torch.testing.assert_close(p.detach().abs(), torch.full((20,), 1e-3))
