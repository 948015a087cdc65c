"""DPO (``llmbook.finetune.dpo``): hand-computed values, gradients, masking.

``trl`` (the library practitioners use for DPO) is not part of the course stack, so
the loss is checked against the formula of Rafailov et al. (2023) written out with
``math`` on hand-picked numbers, against an independent torch evaluation
(``-logsigmoid``) on fresh seeded inputs, and its gradient against the closed form
``d loss / d pi_c = -beta * sigmoid(-margin) / batch``.
"""

from __future__ import annotations

import math

import pytest
import torch

from llmbook.finetune.dpo import dpo_loss, preference_margin, sequence_log_prob
from llmbook.model import GPT, GPTConfig


def test_equal_policy_and_reference_gives_log_two():
    z = torch.tensor([-3.0, -7.5, -1.25])
    loss = dpo_loss(z, z - 2.0, z, z - 2.0, beta=0.3)
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-7)


def test_hand_computed_cases():
    # pi_c - ref_c = 1.5, pi_r - ref_r = -0.5 -> difference 2; beta 0.5 -> margin 1
    pi_c, pi_r = torch.tensor([-10.0]), torch.tensor([-12.5])
    ref_c, ref_r = torch.tensor([-11.5]), torch.tensor([-12.0])
    margin = preference_margin(pi_c, pi_r, ref_c, ref_r, beta=0.5)
    assert margin.item() == pytest.approx(1.0, abs=1e-6)
    expected = math.log(1 + math.exp(-1.0))  # -log sigmoid(1) = 0.31326...
    assert dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.5).item() == pytest.approx(
        expected, abs=1e-6
    )
    # the same numbers with the answers swapped: margin -1, loss log(1 + e)
    swapped = dpo_loss(pi_r, pi_c, ref_r, ref_c, beta=0.5)
    assert swapped.item() == pytest.approx(math.log(1 + math.e), abs=1e-6)


def test_matches_formula_on_random_batches():
    gen = torch.Generator().manual_seed(0)
    for batch, beta in ((1, 0.1), (5, 0.5), (7, 2.0)):
        pi_c, pi_r, ref_c, ref_r = (
            -20 * torch.rand(batch, generator=gen) for _ in "abcd"
        )
        expected = -torch.nn.functional.logsigmoid(
            beta * ((pi_c - ref_c) - (pi_r - ref_r))
        ).mean()
        got = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
        assert torch.allclose(got, expected, atol=1e-6)
        by_hand = (
            sum(
                math.log1p(math.exp(-beta * float((a - c) - (b - d))))
                for a, b, c, d in zip(pi_c, pi_r, ref_c, ref_r, strict=True)
            )
            / batch
        )
        assert got.item() == pytest.approx(by_hand, rel=1e-5)


def test_large_margins_stay_finite():
    big = torch.tensor([1e4, -1e4])
    zero = torch.zeros(2)
    loss_each = [
        dpo_loss(big[i : i + 1], zero[:1], zero[:1], zero[:1], 1.0) for i in (0, 1)
    ]
    assert loss_each[0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss_each[1].item() == pytest.approx(1e4, rel=1e-6)


def test_gradient_direction_and_size():
    gen = torch.Generator().manual_seed(1)
    beta = 0.7
    pi_c = (-5 * torch.rand(4, generator=gen)).requires_grad_()
    pi_r = (-5 * torch.rand(4, generator=gen)).requires_grad_()
    ref_c, ref_r = -5 * torch.rand(4, generator=gen), -5 * torch.rand(4, generator=gen)
    dpo_loss(pi_c, pi_r, ref_c, ref_r, beta).backward()
    margin = beta * ((pi_c - ref_c) - (pi_r - ref_r)).detach()
    weight = beta * torch.sigmoid(-margin) / 4
    # minimising raises the chosen answer's log-prob and lowers the rejected one's
    assert bool((pi_c.grad < 0).all()) and bool((pi_r.grad > 0).all())
    assert torch.allclose(pi_c.grad, -weight, atol=1e-7)
    assert torch.allclose(pi_r.grad, weight, atol=1e-7)


def test_sequence_log_prob_sums_only_answer_tokens():
    # vocab 3, one sequence of 3 positions; only the last two targets are answer tokens
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    targets = torch.tensor([[2, 0, 1]])
    mask = torch.tensor([[0, 1, 1]])
    expected = (1 - math.log(math.e + 2)) + (2 - math.log(math.e**2 + 2))
    got = sequence_log_prob(logits, targets, mask)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # changing the prompt position's logits or target changes nothing
    logits2, targets2 = logits.clone(), targets.clone()
    logits2[0, 0] = torch.tensor([5.0, -3.0, 9.0])
    targets2[0, 0] = 1
    assert sequence_log_prob(logits2, targets2, mask).item() == pytest.approx(expected)


def test_sequence_log_prob_on_a_gpt_with_padding():
    torch.manual_seed(2)
    model = GPT(
        GPTConfig(vocab_size=31, context_length=16, d_model=16, n_heads=2)
    ).eval()
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 31, (3, 10), generator=gen)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    spans = [(3, 9), (2, 5), (6, 8)]  # answer targets; later positions are padding
    for row, (a, b) in enumerate(spans):
        mask[row, a:b] = True
    with torch.no_grad():
        got = sequence_log_prob(model(ids[:, :-1]), ids[:, 1:], mask)
        for row, (a, b) in enumerate(spans):
            log_probs = torch.log_softmax(model(ids[row : row + 1, :-1])[0], dim=-1)
            loop = sum(log_probs[t, ids[row, t + 1]].item() for t in range(a, b))
            assert got[row].item() == pytest.approx(loop, abs=1e-4)


def test_bad_inputs_raise():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        preference_margin(z, z, z, z, beta=-1)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(z, torch.zeros(2), z, z)
    with pytest.raises(ValueError, match="logits"):
        sequence_log_prob(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), z)
    with pytest.raises(ValueError, match="answer_mask"):
        sequence_log_prob(
            torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4)
        )
    with pytest.raises(TypeError, match="integer"):
        sequence_log_prob(torch.zeros(2, 3, 5), torch.zeros(2, 3), torch.zeros(2, 3))
