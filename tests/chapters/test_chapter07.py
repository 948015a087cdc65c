"""Chapter 7's inline instruction-tuning code: the answer-only loss and its batches.

The chapter writes ``answer_masked_loss``, ``encode_pair`` and ``make_batch`` inline.
Here the loss equals a direct token-by-token computation (within 1e-6) on fresh
seeded logits (batch 3, odd lengths, random masks), ignores every unmasked position,
and the batches mark exactly the answer tokens and the closing end-of-text as targets.
It also checks the helpers of the methods table and of DPO: ``training_bytes`` on a
layer whose saved tensors can be counted by hand, ``preference_pairs`` (the rejected
answer is always another answer) and ``n_params``.
"""

from pathlib import Path

import pytest
import torch
from notebook_defs import notebook_definitions

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "07_finetuning.ipynb"
EOS = 0


class CharTokenizer:
    """One id per character (1 + ord % 50), so any string encodes; 0 is EOS."""

    def encode(self, text):
        return [1 + ord(c) % 50 for c in text]


@pytest.fixture(scope="module")
def nb():
    extra = {
        "tokenizer": CharTokenizer(),
        "eos_id": EOS,
        "device": "cpu",
        "MAX_TOKENS": 64,
    }
    return notebook_definitions(
        CHAPTER,
        ["answer_masked_loss", "encode_pair", "make_batch"],
        extra_globals=extra,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("seq", [5, 9])
def test_answer_masked_loss_matches_direct_sum(nb, seed, seq):
    gen = torch.Generator().manual_seed(700 + seed)
    logits = torch.randn(3, seq, 11, generator=gen)
    targets = torch.randint(0, 11, (3, seq), generator=gen)
    mask = torch.rand(3, seq, generator=gen) < 0.5
    mask[:, -1] = True  # at least one answer token per row
    log_probs = logits.log_softmax(dim=-1)
    picked = [
        -log_probs[b, t, targets[b, t]]
        for b in range(3)
        for t in range(seq)
        if mask[b, t]
    ]
    expected = torch.stack(picked).mean()
    got = nb.answer_masked_loss(logits, targets, mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    noisy = logits + 5 * torch.randn(logits.shape, generator=gen) * (~mask)[..., None]
    torch.testing.assert_close(
        nb.answer_masked_loss(noisy, targets, mask), got, rtol=0, atol=1e-6
    )


def test_batch_targets_are_the_answers(nb):
    pairs = [("open", "Open a file."), ("f", "Return x and y, in that order.")]
    inputs, targets, mask = nb.make_batch(pairs)
    assert inputs.shape == targets.shape == mask.shape
    tok = CharTokenizer()
    for row, (_, answer) in enumerate(pairs):
        assert targets[row][mask[row]].tolist() == tok.encode(answer) + [EOS]
        ids, _ = nb.encode_pair(*pairs[row])
        assert inputs[row, : len(ids) - 1].tolist() == ids[:-1]


@pytest.fixture(scope="module")
def costs():
    import numpy as np

    return notebook_definitions(
        CHAPTER,
        ["training_bytes", "preference_pairs", "n_params"],
        extra_globals={"np": np},
    )


def test_training_bytes_counts_weights_state_and_saved_activations(costs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh())
    x = torch.randn(4, 6)
    weights = (6 * 5 + 5) * 4  # float32
    # all trainable: gradients + AdamW's two moments = 3 more copies; autograd saves
    # the input of the linear layer (for the weight's gradient) and tanh's output
    saved = 4 * 6 * 4 + 4 * 5 * 4
    assert costs.training_bytes(model, lambda: model(x).sum()) == 4 * weights + saved
    # weight frozen: only the bias has state, and the input is no longer saved
    model[0].weight.requires_grad_(False)
    assert costs.training_bytes(model, lambda: model(x).sum()) == (
        weights + 3 * 5 * 4 + 4 * 5 * 4
    )


def test_preference_pairs_reject_another_answer(costs):
    pairs = [(f"f{i}", f"Answer {i % 7}.") for i in range(40)]  # repeated answers
    triples = costs.preference_pairs(pairs, seed=3)
    assert 0 < len(triples) <= len(pairs)
    answers = {a for _, a in pairs}
    for name, chosen, rejected in triples:
        assert (name, chosen) in pairs
        assert rejected != chosen and rejected in answers


def test_n_params_counts_the_signature(costs):
    import ast

    src = (
        "def f(a, b=1, *args, c, **kw): pass\n"
        "class K:\n"
        "    def m(self, x, /, y): pass\n"
        "    @classmethod\n"
        "    def n(cls): pass\n"
    )
    funcs = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef)]
    assert [costs.n_params(f) for f in funcs] == [5, 2, 0]
