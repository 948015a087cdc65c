"""``target_log_probs``, the one function that scores target tokens under a causal
LM's logits, against ``torch.nn.functional.cross_entropy`` and Hugging Face's
GPT-2 loss, and the callers that now share it (DPO, perplexity evaluation, batched
scoring, memorization) against their definitions, on fresh seeded inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_gpt

from llmbook.finetune.dpo import sequence_log_prob as dpo_sequence_log_prob
from llmbook.metrics import score_sequences, target_log_probs
from llmbook.responsible.memorization import sequence_log_perplexity
from llmbook.train import evaluate_perplexity


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def gen(request):
    return torch.Generator().manual_seed(310 + request.param)


def batch(gen, vocab=37):
    logits = torch.randn(4, 11, vocab, generator=gen) * 3
    targets = torch.randint(vocab, (4, 11), generator=gen)
    mask = torch.rand(4, 11, generator=gen) > 0.3
    mask[0] = True  # one full row
    return logits, targets, mask


def test_equals_cross_entropy(gen):
    logits, targets, mask = batch(gen)
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (4, 11)
    per_token = target_log_probs(logits, targets, mask, reduction="none")
    torch.testing.assert_close(per_token[mask], -ce[mask], rtol=0, atol=1e-5)
    assert (per_token[~mask] == 0).all()
    want_sum = -(ce * mask).sum(dim=1)
    torch.testing.assert_close(target_log_probs(logits, targets, mask), want_sum)
    torch.testing.assert_close(
        target_log_probs(logits, targets, mask, reduction="mean"),
        want_sum / mask.sum(dim=1),
    )
    torch.testing.assert_close(  # no mask: every position counts
        target_log_probs(logits, targets), -ce.sum(dim=1)
    )


def test_equals_hugging_face_gpt2_loss(tiny_hf_gpt2, gen):
    ids = torch.randint(100, (3, 14), generator=gen)
    with torch.no_grad():
        out = tiny_hf_gpt2(ids, labels=ids)  # HF shifts the labels inside
    mean = target_log_probs(out.logits[:, :-1], ids[:, 1:], reduction="mean")
    torch.testing.assert_close(-mean.mean(), out.loss, rtol=0, atol=1e-5)


def test_masked_positions_may_hold_anything_and_half_precision_is_upcast(gen):
    logits, targets, mask = batch(gen)
    odd = targets.masked_fill(~mask, -100)
    assert torch.equal(
        target_log_probs(logits, odd, mask), target_log_probs(logits, targets, mask)
    )
    half = target_log_probs(logits.bfloat16(), targets, mask)
    assert half.dtype == torch.float32
    want = target_log_probs(logits.bfloat16().float(), targets, mask)
    assert torch.equal(half, want)


def test_clear_errors(gen):
    logits, targets, mask = batch(gen)
    with pytest.raises(ValueError, match="reduction"):
        target_log_probs(logits, targets, reduction="max")
    with pytest.raises(ValueError, match=r"logits must be \(batch, seq, vocab\)"):
        target_log_probs(logits[0], targets)
    with pytest.raises(ValueError, match="targets must be"):
        target_log_probs(logits, targets[:, :5])
    with pytest.raises(ValueError, match="mask must be"):
        target_log_probs(logits, targets, mask[:, :5])
    with pytest.raises(TypeError, match="integer token ids"):
        target_log_probs(logits, targets.float())
    with pytest.raises(ValueError, match=r"\[0, 37\)"):
        target_log_probs(logits, targets.masked_fill(mask, 37), mask)


def test_dpo_answer_log_prob_is_the_shared_sum(gen):
    logits, targets, mask = batch(gen)
    got = dpo_sequence_log_prob(logits, targets, mask)
    assert torch.equal(got, target_log_probs(logits, targets, mask))


@pytest.fixture(scope="module")
def small_gpt():
    return random_gpt(0, vocab_size=50, context_length=16, n_layers=2)


def test_callers_agree_with_a_by_hand_chain_rule(small_gpt, gen):
    """Perplexity evaluation, batched scoring and memorization's log-perplexity
    against sum_t log p(x_t | x_<t) computed one position at a time."""
    model = small_gpt
    docs = [torch.randint(1, 50, (n,), generator=gen).tolist() for n in (5, 9, 12)]

    def by_hand(seq, start):
        with torch.no_grad():
            logits = model(torch.tensor([seq[:-1]]))[0].log_softmax(-1)
        return sum(logits[t - 1, seq[t]].item() for t in range(start, len(seq)))

    logprob, count = score_sequences(model, docs, [1, 1, 1], 16, device="cpu")
    for i, doc in enumerate(docs):
        assert count[i] == len(doc) - 1
        assert logprob[i] == pytest.approx(by_hand(doc, 1), abs=1e-4)
    bits = sequence_log_perplexity(model, docs, prefix_length=2)
    for i, doc in enumerate(docs):
        assert bits[i].item() == pytest.approx(-by_hand(doc, 2) / math.log(2), abs=1e-4)
    # one short document: the stream EOS doc EOS fits in one window
    nll = -by_hand([0] + docs[1] + [0], 1)
    ppl = evaluate_perplexity(model, [docs[1]], eos_id=0)
    assert ppl == pytest.approx(math.exp(nll / (len(docs[1]) + 1)), rel=1e-5)
