"""Teach, then import: Chapter 5's inline masking agrees with llmbook.train.objectives.

Section 1 of Chapter 5 writes BERT's masked-LM corruption (``mask_tokens``) inline;
``src/llmbook/objectives.py`` holds the package copy. With generators in the same
state the two must return identical tensors (exact equality: same random draws in
the same order), on batches with special tokens, odd lengths and several masking
rates.
"""

from pathlib import Path

import pytest
import torch
from notebook_defs import notebook_definitions

import llmbook.train.objectives as pkg

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "chapters" / "05_pretraining.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, ["mask_tokens"])


def test_the_definition_comes_from_the_notebook(nb):
    assert nb.mask_tokens.__module__.startswith("notebook:")
    assert nb.mask_tokens is not pkg.mask_tokens


@pytest.mark.parametrize("mask_prob", [0.15, 0.5, 0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_tokens_agrees(nb, seed, mask_prob):
    g = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(1, 50, (3, 37), generator=g)  # batch 3, odd length
    ids[:, 0] = 0
    ids[1, 20:] = 51  # e.g. padding, also special
    kwargs = {"vocab_size": 52, "mask_id": 50, "special_ids": (0, 51)}
    ours = nb.mask_tokens(
        ids,
        mask_prob=mask_prob,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
    theirs = pkg.mask_tokens(
        ids,
        mask_prob=mask_prob,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype == torch.long
        assert torch.equal(a, b)
    assert not (ours[1][ids == 0] != -100).any()


def test_mask_tokens_rejects_bad_probability(nb):
    with pytest.raises(ValueError, match="mask_prob"):
        ids = torch.zeros(2, 3, dtype=torch.long)
        nb.mask_tokens(ids, vocab_size=4, mask_id=3, mask_prob=1.5)
