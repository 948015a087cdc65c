"""Teach, then import: Chapter 6's inline decoding code agrees with llmbook.decoding.

The chapter writes greedy decoding, the four logits filters, the cached forward pass,
the speculative acceptance rule and fill-mask inline; ``src/llmbook/decoding/`` holds
the package copy. Here every inline definition with a package twin takes the same
parameters, and both give the same results on fresh seeded inputs (batch > 1, odd
sizes): filters and cached logits within 1e-6 (the same operations in the same
order), generated tokens and accept/resample draws exactly.
"""

from pathlib import Path

import pytest
import torch
from helpers import random_gpt
from notebook_defs import assert_same_signature, notebook_definitions

import llmbook.decoding as pkg

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "06_decoding.ipynb"
TWINS = [
    "top_k_filter",
    "top_p_filter",
    "min_p_filter",
    "repetition_penalty",
    "forward_with_cache",
    "accept_or_resample",
    "fill_mask",
]


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(CHAPTER, [*TWINS, "greedy_decode"])


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def gen(request):
    torch.manual_seed(600 + request.param)
    return torch.Generator().manual_seed(60 + request.param)


@pytest.mark.parametrize("name", TWINS)
def test_same_signature(nb, name):
    assert_same_signature(getattr(nb, name), getattr(pkg, name))


def test_filters_agree(nb, gen):
    logits = torch.randn(3, 97, generator=gen) * torch.rand(3, 1, generator=gen) * 5
    ids = torch.randint(97, (3, 11), generator=gen)
    pairs = [
        (nb.top_k_filter(logits, 7), pkg.top_k_filter(logits, 7)),
        (nb.top_p_filter(logits, 0.83), pkg.top_p_filter(logits, 0.83)),
        (nb.min_p_filter(logits, 0.07), pkg.min_p_filter(logits, 0.07)),
        (
            nb.repetition_penalty(logits, ids, 1.4),
            pkg.repetition_penalty(logits, ids, 1.4),
        ),
    ]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="top_p"):
        nb.top_p_filter(logits, 0.0)


SIZES = {"vocab_size": 53, "context_length": 40, "d_model": 24, "n_heads": 3,
         "n_layers": 2, "dropout": 0.0}  # fmt: skip


def test_greedy_and_cached_forward_agree(nb, gen):
    model = random_gpt(config=SIZES, scale=0.2, generator=gen)
    ids = torch.randint(53, (2, 9), generator=gen)
    assert torch.equal(
        nb.greedy_decode(model, ids, 15), pkg.generate(model, ids, 15, 0)
    )
    mine, theirs = pkg.KVCache(model, 2), pkg.KVCache(model, 2)
    for a, b in ((0, 9), (9, 10), (10, 17)):
        x = torch.randint(53, (2, b - a), generator=gen)
        torch.testing.assert_close(
            nb.forward_with_cache(model, x, mine),
            pkg.forward_with_cache(model, x, theirs),
            rtol=0,
            atol=1e-6,
        )
    assert mine.length == theirs.length == 17


def test_accept_or_resample_agrees(nb, gen):
    vocab, k = 11, 4
    for _ in range(20):
        p = torch.rand(k + 1, vocab, generator=gen).softmax(-1)
        q = torch.rand(k, vocab, generator=gen).softmax(-1)
        drafted = torch.randint(vocab, (k,), generator=gen)
        seed = int(torch.randint(10**6, (), generator=gen))
        ours = nb.accept_or_resample(p, q, drafted, torch.Generator().manual_seed(seed))
        theirs = pkg.accept_or_resample(
            p, q, drafted, torch.Generator().manual_seed(seed)
        )
        assert ours == theirs


def test_fill_mask_agrees(nb):
    from llmbook.model import from_pretrained, load_tokenizer

    mlm, tokenizer = from_pretrained("course-mlm"), load_tokenizer("course-mlm")
    text = f"Return the {tokenizer.mask_token} of a {tokenizer.mask_token} list."
    ours = nb.fill_mask(mlm, tokenizer, text, 4)
    theirs = pkg.fill_mask(mlm, tokenizer, text, 4)
    assert len(ours) == 2 and [w for w, _ in ours[0]] == [w for w, _ in theirs[0]]
    for row_a, row_b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(
            torch.tensor([p for _, p in row_a]), torch.tensor([p for _, p in row_b])
        )
