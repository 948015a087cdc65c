"""Teach, then import: Chapter 5's inline training step, loss, optimiser and schedule
agree with llmbook.train (same signatures, same numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from notebook_defs import assert_same_signature, notebook_definitions

import llmbook.train as pkg
from llmbook.model import GPT
from llmbook.train import PRESETS

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "05_pretraining.ipynb"
NAMES = ["lm_loss", "train_step", "make_optimizer", "lr_at"]


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(CHAPTER, NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_same_signature_as_the_package(nb, name):
    assert getattr(nb, name) is not getattr(pkg, name)
    assert_same_signature(getattr(nb, name), getattr(pkg, name))


@pytest.mark.parametrize("n_micro", [1, 3])
def test_inline_step_equals_the_package_step(nb, n_micro):
    config = PRESETS["tiny"].replace(model={"dropout": 0.0})
    torch.manual_seed(n_micro)
    ours, theirs = GPT(config.model), GPT(config.model)
    theirs.load_state_dict(ours.state_dict())
    opt_ours = nb.make_optimizer(ours, config)
    opt_theirs = pkg.make_optimizer(theirs, config)
    assert [g["weight_decay"] for g in opt_ours.param_groups] == [
        g["weight_decay"] for g in opt_theirs.param_groups
    ]
    gen = torch.Generator().manual_seed(10 + n_micro)
    for step in range(3):
        micro = [torch.randint(0, 2048, (5, 33), generator=gen) for _ in range(n_micro)]
        lr = nb.lr_at(step, config)
        assert lr == pkg.lr_at(step, config)
        a = nb.train_step(ours, opt_ours, micro, lr=lr, grad_clip=0.3)
        b = pkg.train_step(theirs, opt_theirs, micro, lr=lr, grad_clip=0.3)
        assert torch.equal(a, b)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)


def test_inline_loss_and_schedule(nb):
    config = PRESETS["cpu"]
    torch.manual_seed(0)
    model = GPT(PRESETS["tiny"].model).eval()
    batch = torch.randint(0, 2048, (3, 17))
    assert torch.equal(nb.lm_loss(model, batch), pkg.lm_loss(model, batch))
    for step in (0, 50, 99, 100, 900, 1799):
        assert nb.lr_at(step, config) == pkg.lr_at(step, config)
    with pytest.raises(ValueError, match="micro-batch"):
        nb.train_step(model, nb.make_optimizer(model, config), [])
