"""llmbook.train.objectives against PyTorch and Hugging Face.

* ``causal_lm_loss`` equals ``F.cross_entropy`` (float32 within 1e-6, float64
  within 1e-12) and the loss Hugging Face's ``GPT2LMHeadModel`` returns for
  ``labels=`` (within 1e-6), including ignored (-100) positions.
* ``sequence_log_prob`` equals the sum of per-token log-softmax values, and the
  chain rule: the product of step-by-step conditional probabilities computed by
  feeding a GPT-2 one prefix at a time.
* ``mask_tokens`` on 200,000 positions: fraction chosen 0.15 +- 0.005, and of the
  chosen 80 / 10 / 10 % (+- 0.01) masked / random / unchanged; specials never chosen.
  (Binomial standard errors: 0.0008 and <= 0.0023, so these are > 4 sigma.) It
  equals ``DataCollatorForLanguageModeling`` draw for draw, and their statistics
  agree within the same tolerances.
* ``span_corruption`` is inverted exactly by ``reconstruct_from_spans`` for many
  seeds and lengths; its noise fraction is 0.15 +- 0.01 on long sequences.
* ``next_sentence_pairs``: 50 / 50 labels (+- 0.03 on 2,000 pairs), true pairs
  consecutive in one document, false pairs from different documents.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.train.objectives import (
    IGNORE_INDEX,
    causal_lm_loss,
    mask_tokens,
    next_sentence_pairs,
    perplexity,
    reconstruct_from_spans,
    sequence_log_prob,
    span_corruption,
    split_sentences,
)

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def gen(request):
    return torch.Generator().manual_seed(500 + request.param)


def random_batch(gen, batch=3, seq=7, vocab=11, dtype=torch.float32):
    logits = 3 * torch.randn(batch, seq, vocab, generator=gen, dtype=dtype)
    targets = torch.randint(vocab, (batch, seq), generator=gen)
    return logits, targets


# --- causal LM loss ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(TOL))
def test_causal_lm_loss_equals_cross_entropy(gen, dtype):
    logits, targets = random_batch(gen, dtype=dtype)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    got = causal_lm_loss(logits, targets)
    assert got.dtype == dtype and got.shape == ()
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", list(TOL))
def test_causal_lm_loss_honours_ignore_index(gen, dtype):
    logits, targets = random_batch(gen, dtype=dtype)
    targets[0, 4:] = IGNORE_INDEX  # padding at the end of a shorter sequence
    targets[2, 1] = IGNORE_INDEX
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(
        causal_lm_loss(logits, targets), expected, rtol=0, atol=TOL[dtype]
    )
    targets[targets == IGNORE_INDEX] = 5  # a custom ignore index
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=5)
    torch.testing.assert_close(
        causal_lm_loss(logits, targets, ignore_index=5),
        expected,
        rtol=0,
        atol=TOL[dtype],
    )


def test_causal_lm_loss_half_precision_is_computed_in_float32(gen):
    logits, targets = random_batch(gen)
    expected = F.cross_entropy(
        logits.bfloat16().float().flatten(0, 1), targets.flatten()
    )
    got = causal_lm_loss(logits.bfloat16(), targets)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_causal_lm_loss_equals_hugging_face_gpt2(tiny_hf_gpt2, gen):
    ids = torch.randint(100, (3, 13), generator=gen)  # batch 3, odd length
    labels = ids.clone()
    labels[1, 9:] = IGNORE_INDEX  # HF ignores -100 labels as well
    with torch.no_grad():
        out = tiny_hf_gpt2(ids, labels=labels)
    # HF shifts inside: logits at t predict labels at t + 1.
    ours = causal_lm_loss(out.logits[:, :-1], labels[:, 1:])
    torch.testing.assert_close(ours, out.loss, rtol=0, atol=1e-6)


def test_sequence_log_prob_is_the_sum_of_token_log_probs(gen):
    logits, targets = random_batch(gen, dtype=torch.float64)
    targets[1, 5:] = IGNORE_INDEX
    lp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])
    expected = lp.squeeze(-1).masked_fill(targets == IGNORE_INDEX, 0).sum(-1)
    got = sequence_log_prob(logits, targets)
    assert got.shape == (3,) and (got <= 0).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # mean over the kept positions of the whole batch is the loss
    n = (targets != IGNORE_INDEX).sum()
    torch.testing.assert_close(-got.sum() / n, causal_lm_loss(logits, targets))


def test_sequence_log_prob_obeys_the_chain_rule(tiny_hf_gpt2, gen):
    """p(x_1..x_T | x_0) = prod_t p(x_t | x_<t), each factor from a separate call."""
    ids = torch.randint(100, (2, 9), generator=gen)
    with torch.no_grad():
        logits = tiny_hf_gpt2(ids).logits.double()
        whole = sequence_log_prob(logits[:, :-1], ids[:, 1:])
        prob = torch.ones(2, dtype=torch.float64)
        for t in range(1, ids.shape[1]):
            step = tiny_hf_gpt2(ids[:, :t]).logits[:, -1].double().softmax(-1)
            prob *= step.gather(-1, ids[:, t : t + 1]).squeeze(-1)
    torch.testing.assert_close(whole.exp(), prob, rtol=1e-5, atol=0)


def test_perplexity_of_uniform_guessing_is_the_vocabulary_size():
    v = 2048
    logits = torch.zeros(2, 5, v)  # uniform over v tokens
    targets = torch.randint(v, (2, 5))
    loss = causal_lm_loss(logits, targets)
    assert loss.item() == pytest.approx(math.log(v), abs=1e-5)
    assert perplexity(loss) == pytest.approx(v, rel=1e-5)
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(2) * 3) == pytest.approx(8)  # 3 bits -> 8 choices
    with pytest.raises(ValueError, match="NaN"):
        perplexity(float("nan"))


def test_causal_lm_loss_errors():
    logits, targets = torch.randn(2, 4, 5), torch.randint(5, (2, 4))
    with pytest.raises(ValueError, match=r"logits must be \(batch, seq, vocab\)"):
        causal_lm_loss(logits[0], targets)
    with pytest.raises(ValueError, match="targets must be"):
        causal_lm_loss(logits, targets[:, :3])
    with pytest.raises(TypeError, match="integer token ids"):
        causal_lm_loss(logits, targets.float())
    with pytest.raises(TypeError, match="floating point"):
        causal_lm_loss(targets[..., None].expand(2, 4, 5), targets)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        causal_lm_loss(logits, targets + 5)


# --- masked LM -----------------------------------------------------------------------

V, MASK, SPECIALS = 2049, 2048, (0, 2048)


def mask_statistics(ids, inputs, labels, specials=SPECIALS):
    """Fraction chosen among non-special positions, and the 80/10/10 split."""
    special = torch.isin(ids, torch.tensor(specials))
    chosen = labels != IGNORE_INDEX
    n = chosen.sum().item()
    masked = (chosen & (inputs == MASK)).sum().item() / n
    same = (chosen & (inputs == ids)).sum().item() / n
    return {
        "chosen": n / (~special).sum().item(),
        "masked": masked,
        "random": 1 - masked - same,
        "unchanged": same,
        "special_chosen": (chosen & special).any().item(),
        "labels_ok": bool(
            (labels[chosen] == ids[chosen]).all()
            and (inputs[~chosen] == ids[~chosen]).all()
        ),
    }


def big_batch(seed=0, shape=(400, 500)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, MASK, shape, generator=g)
    ids[:, 0] = 0  # an <|endoftext|> at the start of every row
    ids[::7, 100:110] = 0
    return ids


def check_statistics(stats):
    assert abs(stats["chosen"] - 0.15) < 0.005, stats
    assert abs(stats["masked"] - 0.80) < 0.01, stats
    # a random replacement hits the original id with probability 1/V, so
    # "unchanged" is 0.10 + 0.10/V and "random" 0.10 - 0.10/V: both within 1e-4
    assert abs(stats["random"] - 0.10) < 0.01, stats
    assert abs(stats["unchanged"] - 0.10) < 0.01, stats
    assert not stats["special_chosen"], stats
    assert stats["labels_ok"], stats


def test_mask_tokens_statistics():
    ids = big_batch()
    before = ids.clone()
    g = torch.Generator().manual_seed(1)
    inputs, labels = mask_tokens(
        ids, vocab_size=V, mask_id=MASK, special_ids=SPECIALS, generator=g
    )
    assert torch.equal(ids, before), "ids must not be modified"
    assert inputs.shape == labels.shape == ids.shape
    assert inputs.dtype == labels.dtype == torch.long
    assert inputs.min() >= 0 and inputs.max() < V
    check_statistics(mask_statistics(ids, inputs, labels))


def test_mask_tokens_is_reproducible_and_handles_extremes():
    ids = big_batch(shape=(3, 17))
    kwargs = {"vocab_size": V, "mask_id": MASK, "special_ids": SPECIALS}
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(3), **kwargs)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(3), **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    inputs, labels = mask_tokens(ids, mask_prob=0.0, **kwargs)
    assert torch.equal(inputs, ids) and (labels == IGNORE_INDEX).all()
    inputs, labels = mask_tokens(ids, mask_prob=1.0, **kwargs)
    assert torch.equal(labels != IGNORE_INDEX, ids != 0)


@pytest.fixture(scope="module")
def hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    from llmbook.data import course_tokenizer

    # The course tokenizer has no mask token: [MASK] is added as id 2048.
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=course_tokenizer(2048),
        eos_token="<|endoftext|>",
        mask_token="[MASK]",
    )
    assert len(tok) == V and tok.mask_token_id == MASK
    assert sorted(tok.all_special_ids) == list(SPECIALS)
    return tok


def test_mask_tokens_matches_hugging_face_collator(hf_tokenizer):
    from transformers import DataCollatorForLanguageModeling

    ids = big_batch(seed=4)
    for seed in (0, 1):
        collator = DataCollatorForLanguageModeling(
            hf_tokenizer, mlm_probability=0.15, seed=seed
        )
        hf = collator([row.tolist() for row in ids])  # specials from the tokenizer
        ours = mask_tokens(
            ids,
            vocab_size=len(hf_tokenizer),
            mask_id=hf_tokenizer.mask_token_id,
            special_ids=hf_tokenizer.all_special_ids,
            generator=torch.Generator().manual_seed(seed),
        )
        hf_stats = mask_statistics(ids, hf["input_ids"], hf["labels"])
        our_stats = mask_statistics(ids, *ours)
        check_statistics(hf_stats)
        for key in ("chosen", "masked", "random", "unchanged"):
            assert abs(hf_stats[key] - our_stats[key]) < 0.01, (key, hf_stats)
        # Same draws in the same order: identical, not just statistically alike.
        assert torch.equal(ours[0], hf["input_ids"])
        assert torch.equal(ours[1], hf["labels"])


def test_mask_tokens_errors():
    ids = torch.randint(5, (2, 6))
    with pytest.raises(TypeError, match="integer token ids"):
        mask_tokens(ids.float(), vocab_size=6, mask_id=5)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"mask_prob must lie in \[0, 1\]"):
            mask_tokens(ids, vocab_size=6, mask_id=5, mask_prob=p)
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(ids, vocab_size=5, mask_id=5)


# --- span corruption -----------------------------------------------------------------

SENTINELS = list(range(1000, 1100))


@pytest.mark.parametrize("length", [2, 3, 5, 7, 10, 31, 64, 101, 512])
def test_span_corruption_is_inverted_exactly(length):
    for seed in range(25):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, 1000, (length,), generator=g)
        inputs, targets = span_corruption(ids, sentinel_ids=SENTINELS, generator=g)
        assert torch.equal(reconstruct_from_spans(inputs, targets, SENTINELS), ids)
        # sentinels in order: <0>, <1>, ... in the inputs; one more in the targets
        in_sent = inputs[inputs >= 1000].tolist()
        assert in_sent == SENTINELS[: len(in_sent)] and in_sent
        assert targets[targets >= 1000].tolist() == SENTINELS[: len(in_sent) + 1]
        assert targets[0] == SENTINELS[0]
        n_noise = len(targets) - len(in_sent) - 1
        assert len(inputs) == length - n_noise + len(in_sent)
        assert 1 <= n_noise <= length - 1


def test_span_corruption_noise_fraction_and_span_length():
    noise, spans, total = 0, 0, 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, 1000, (1000,), generator=g)
        inputs, targets = span_corruption(ids, sentinel_ids=SENTINELS, generator=g)
        n_spans = int((inputs >= 1000).sum())
        noise += len(targets) - n_spans - 1
        spans += n_spans
        total += len(ids)
    assert abs(noise / total - 0.15) < 0.01
    assert abs(noise / spans - 3.0) < 0.1


def test_span_corruption_puts_spans_anywhere():
    starts, ends = set(), set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        ids = torch.arange(12)
        inputs, _ = span_corruption(ids, sentinel_ids=SENTINELS, generator=g)
        starts.add(inputs[0].item() >= 1000)
        ends.add(inputs[-1].item() >= 1000)
    assert starts == {True, False} and ends == {True, False}


def test_span_corruption_errors():
    ids = torch.arange(40)
    with pytest.raises(ValueError, match="need 3 sentinel ids"):
        span_corruption(ids, sentinel_ids=[100, 101])
    with pytest.raises(ValueError, match="already contain a sentinel"):
        span_corruption(ids, sentinel_ids=[5, 100, 101])
    with pytest.raises(TypeError, match="integer token ids"):
        span_corruption(ids.float(), sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="one sequence"):
        span_corruption(ids.view(2, 20), sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        span_corruption(ids[:1], sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption(ids, sentinel_ids=SENTINELS, noise_density=1.0)
    with pytest.raises(ValueError, match="out of order"):
        reconstruct_from_spans(
            torch.tensor([1, 101, 2]), torch.tensor([101, 3, 100]), [100, 101]
        )


# --- next-sentence prediction -------------------------------------------------------


def test_split_sentences():
    text = "First one. Second one!\nStill second? Yes.\n\n- a list item\n- another"
    assert split_sentences(text) == [
        "First one.",
        "Second one!",
        "Still second?",
        "Yes.",
        "- a list item - another",
    ]
    assert split_sentences("") == []
    assert split_sentences("See e.g. the docs.") == ["See e.g. the docs."]


def test_next_sentence_pairs():
    docs = [[f"d{d}s{i}" for i in range(n)] for d, n in enumerate([5, 1, 3, 8, 2])]
    pairs = next_sentence_pairs(docs, 2000, seed=0)
    assert pairs == next_sentence_pairs(docs, 2000, seed=0)
    assert abs(sum(p[2] for p in pairs) / len(pairs) - 0.5) < 0.03
    where = {s: (d, i) for d, doc in enumerate(docs) for i, s in enumerate(doc)}
    for a, b, is_next in pairs:
        (da, ia), (db, ib) = where[a], where[b]
        assert ia < len(docs[da]) - 1  # a always has a successor
        if is_next:
            assert da == db and ib == ia + 1
        else:
            assert da != db
    with pytest.raises(ValueError, match="two or more sentences"):
        next_sentence_pairs([["a"], ["b"]], 3)
    with pytest.raises(ValueError, match="two non-empty documents"):
        next_sentence_pairs([["a", "b"], []], 3)
