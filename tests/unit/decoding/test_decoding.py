"""Decoding (``llmbook.decoding``, Chapter 6) against Hugging Face ``transformers``.

The reference is ``GPT2LMHeadModel`` holding the same weights (``to_hf_gpt2``) and its
``generate``, or the ``transformers`` logits processor of the same name. Models are
small random GPTs with perturbed weights (so distributions are far from uniform),
drawn fresh per seed; inputs are seeded random ids, batch > 1 where it applies.

* processors (temperature, top-k, top-p, min-p, repetition penalty): within 1e-6, and
  the same tokens removed;
* greedy and sampled generation, with and without the KV cache, with an end token:
  token-for-token equal to ``generate(do_sample=False/True)`` (sampling: same
  ``torch.manual_seed``, so the same random draws);
* beam search (2-5 beams, length penalty -1/0/1/2, early stopping on/off, with and
  without an end token): equal to ``generate(num_beams=k, do_sample=False)``;
* KV cache: logits of chunked cached passes equal the full pass (1e-5); its size;
* speculative decoding: greedy output equals the target's greedy output; sampled
  output follows the target's distribution (chi-square test over all two-token
  continuations; the same test rejects sampling from the draft alone);
* streaming gives the tokens ``generate`` gives; fill-mask reads the mask's row.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import random_gpt
from scipy.stats import chisquare

from llmbook.decoding import (
    KVCache,
    SamplingConfig,
    accept_or_resample,
    beam_search,
    cache_bytes,
    fill_mask,
    forward_with_cache,
    generate,
    min_p_filter,
    process_logits,
    repetition_penalty,
    speculative_generate,
    stream,
    stream_text,
    top_k_filter,
    top_p_filter,
)
from llmbook.model.gpt import GPT
from llmbook.model.hf import to_hf_gpt2

ATOL = 1e-6


pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    return 3000 + request.param


# the random GPTs here: seeded, then every weight moved by N(0, 0.3^2) unless a test
# says otherwise
SIZES = {"vocab_size": 61, "context_length": 48, "d_model": 32, "n_heads": 4,
         "n_layers": 2, "dropout": 0.0}  # fmt: skip


def to_hf(model: GPT):
    """The exported model, without the course's end-of-text default: each test says
    which end token (if any) both sides use."""
    hf_model = to_hf_gpt2(model).eval()
    for config in (hf_model.config, hf_model.generation_config):
        config.eos_token_id = config.bos_token_id = config.pad_token_id = None
    return hf_model


def hf_generate(hf_model, ids, **kwargs):
    kwargs.setdefault("top_k", None)
    kwargs.setdefault("pad_token_id", kwargs.get("eos_token_id") or 0)
    with torch.no_grad():
        return hf_model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)


# --- processors -------------------------------------------------------------------


def random_logits(gen, batch=4, vocab=50):
    scale = torch.rand(batch, 1, generator=gen) * 4 + 0.5  # sharp and flat rows
    return torch.randn(batch, vocab, generator=gen) * scale


def assert_same_filter(ours, theirs):
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), (
        "different tokens removed"
    )
    kept = ~torch.isinf(theirs)
    torch.testing.assert_close(ours[kept], theirs[kept], rtol=0, atol=ATOL)


def test_processors_equal_transformers(seed):
    from transformers.generation import logits_process as lp

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(50, (4, 9), generator=gen)
    for _ in range(5):
        logits = random_logits(gen)
        for k in (1, 3, 50, 80):
            assert_same_filter(
                top_k_filter(logits, k), lp.TopKLogitsWarper(k)(ids, logits)
            )
        for p in (1e-4, 0.3, 0.9, 0.999, 1.0):
            assert_same_filter(
                top_p_filter(logits, p), lp.TopPLogitsWarper(p)(ids, logits)
            )
        for m in (0.0, 0.05, 0.5, 1.0):
            assert_same_filter(
                min_p_filter(logits, m), lp.MinPLogitsWarper(m)(ids, logits)
            )
        for r in (0.7, 1.3, 2.0):
            theirs = lp.RepetitionPenaltyLogitsProcessor(r)(ids, logits.clone())
            torch.testing.assert_close(
                repetition_penalty(logits, ids, r), theirs, rtol=0, atol=ATOL
            )
        theirs = lp.TemperatureLogitsWarper(0.7)(ids, logits)
        config = SamplingConfig(temperature=0.7)
        torch.testing.assert_close(process_logits(logits, ids, config), theirs)


def test_top_p_edges(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = random_logits(gen)
    assert not torch.isinf(top_p_filter(logits, 1.0)).any()  # keeps everything
    tiny = top_p_filter(logits, 1e-9)  # only the most likely token stays
    assert torch.equal(tiny.argmax(-1), logits.argmax(-1))
    assert (~torch.isinf(tiny)).sum(-1).eq(1).all()
    # the token that crosses the threshold is kept
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = ~torch.isinf(top_p_filter(probs, 0.6))
    assert kept.tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=0), dict(top_p=0.0),
                                 dict(top_p=1.5), dict(min_p=2.0),
                                 dict(repetition_penalty=0.0)])  # fmt: skip
def test_bad_settings_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingConfig(**bad)


# --- greedy and sampling ----------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_greedy_equals_transformers(seed, use_cache):
    model = random_gpt(seed, config=SIZES, scale=0.3)
    hf_model = to_hf(model)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(61, (3, 7), generator=gen)
    ours = generate(model, ids, 20, temperature=0, use_cache=use_cache)
    theirs = hf_generate(hf_model, ids, max_new_tokens=20, do_sample=False)
    assert torch.equal(ours, theirs)
    # with an end token that does occur: rows stop, finished rows are padded with it
    eos = int(ours[0, 7 + 4])
    ours = generate(model, ids, 20, temperature=0, eos_id=eos, use_cache=use_cache)
    theirs = hf_generate(hf_model, ids, max_new_tokens=20, do_sample=False,
                         eos_token_id=eos)  # fmt: skip
    assert torch.equal(ours, theirs)
    penalised = generate(model, ids, 20, temperature=0, repetition_penalty=1.5)
    theirs = hf_generate(hf_model, ids, max_new_tokens=20, do_sample=False,
                         repetition_penalty=1.5)  # fmt: skip
    assert torch.equal(penalised, theirs)


SAMPLING = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=10),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.9, min_p=0.1),
    dict(temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.3),
]


@pytest.mark.parametrize(
    "settings", SAMPLING, ids=lambda s: "-".join(map(str, s.values()))
)
def test_sampling_equals_transformers_draw_for_draw(seed, settings):
    model = random_gpt(seed, config=SIZES, scale=0.3)
    hf_model = to_hf(model)
    ids = torch.randint(61, (4, 5), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    ours = generate(model, ids, 25, **settings)
    torch.manual_seed(seed)
    theirs = hf_generate(hf_model, ids, max_new_tokens=25, do_sample=True, **settings)
    assert torch.equal(ours, theirs)
    # seeded sampling reproduces exactly, with a generator or the global stream
    a = generate(model, ids, 25, generator=torch.Generator().manual_seed(1), **settings)
    b = generate(model, ids, 25, generator=torch.Generator().manual_seed(1), **settings)
    assert torch.equal(a, b)


def test_stream_and_stream_text_give_generates_tokens(seed):
    model = random_gpt(seed, config=SIZES, scale=0.3)
    ids = torch.randint(61, (2, 4), generator=torch.Generator().manual_seed(seed))
    config = SamplingConfig(temperature=0.8, top_k=15)
    streamed = list(
        stream(model, ids, 12, config, generator=torch.Generator().manual_seed(5))
    )
    assert len(streamed) == 12 and streamed[0].shape == (2,)
    whole = generate(model, ids, 12, 0.8, 15, torch.Generator().manual_seed(5))
    assert torch.equal(torch.stack(streamed, 1), whole[:, 4:])

    class Chars:  # a tokenizer whose tokens are letters
        def encode(self, text):
            return [ord(c) - 65 for c in text]

        def decode(self, ids):
            return "".join(chr(65 + i) for i in ids)

    pieces = list(stream_text(model, Chars(), "ABC", 10, SamplingConfig(temperature=0)))
    expected = generate(model, torch.tensor([[0, 1, 2]]), 10, temperature=0)[0, 3:]
    assert "".join(pieces) == Chars().decode(expected.tolist()) and len(pieces) == 10


def test_generation_past_the_context_keeps_the_same_tokens(seed):
    model = random_gpt(seed, config=SIZES, scale=0.3, context_length=16)
    ids = torch.randint(61, (2, 5), generator=torch.Generator().manual_seed(seed))
    a = generate(model, ids, 30, temperature=0, use_cache=True)
    b = generate(model, ids, 30, temperature=0, use_cache=False)
    assert a.shape == (2, 35) and torch.equal(a, b)


# --- beam search ------------------------------------------------------------------

BEAMS = [
    dict(num_beams=2, length_penalty=1.0, early_stopping=False),
    dict(num_beams=3, length_penalty=0.0, early_stopping=True),
    dict(num_beams=4, length_penalty=2.0, early_stopping=False),
    dict(num_beams=5, length_penalty=-1.0, early_stopping=False),
]


@pytest.mark.parametrize("settings", BEAMS, ids=lambda s: "beams{num_beams}-lp{length_penalty}"
                         "-es{early_stopping}".format(**s))  # fmt: skip
@pytest.mark.parametrize("with_eos", [False, True], ids=["no-eos", "eos"])
def test_beam_search_equals_transformers(seed, settings, with_eos):
    model = random_gpt(seed, config=SIZES, scale=0.5, vocab_size=23)
    hf_model = to_hf(model)
    gen = torch.Generator().manual_seed(seed)
    for trial in range(3):
        ids = torch.randint(23, (2, 3 + trial), generator=gen)
        kwargs = {}
        if with_eos:  # a token the beams do meet
            greedy = generate(model, ids, 6, temperature=0)
            kwargs = {"eos_token_id": int(greedy[0, -2])}
        theirs = hf_generate(hf_model, ids, max_new_tokens=12, do_sample=False,
                             **settings, **kwargs)  # fmt: skip
        for use_cache in (True, False):
            ours = beam_search(model, ids, 12, settings["num_beams"],
                               length_penalty=settings["length_penalty"],
                               early_stopping=settings["early_stopping"],
                               eos_id=kwargs.get("eos_token_id"),
                               use_cache=use_cache)  # fmt: skip
            assert torch.equal(ours, theirs), (trial, use_cache, ours, theirs)


def test_one_beam_is_greedy_and_eos_ends_a_beam(seed):
    model = random_gpt(seed, config=SIZES, scale=0.5, vocab_size=23)
    ids = torch.randint(23, (3, 4), generator=torch.Generator().manual_seed(seed))
    greedy = generate(model, ids, 10, temperature=0)
    assert torch.equal(beam_search(model, ids, 10, num_beams=1), greedy)
    eos = int(greedy[0, 6])
    out = beam_search(model, ids, 10, num_beams=3, eos_id=eos)
    first = out[0, 4:].tolist()
    assert eos in first  # the winner of row 0 is a finished hypothesis ...
    after = first[first.index(eos) + 1 :]
    assert all(t == eos for t in after)  # ... padded after its end token


# --- KV cache -------------------------------------------------------------------------


def test_cached_logits_equal_the_full_pass(seed):
    model = random_gpt(seed, config=SIZES, scale=0.3)
    ids = torch.randint(61, (3, 29), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        full = model(ids)
    cache = KVCache(model, 3)
    parts = [forward_with_cache(model, ids[:, a:b], cache)
             for a, b in ((0, 11), (11, 12), (12, 20), (20, 29))]  # fmt: skip
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
    assert cache.length == 29
    cfg = model.config
    assert cache.nbytes == cache_bytes(cfg.n_layers, cfg.d_model, cfg.context_length, 3)
    cache.truncate(20)  # roll back and recompute the tail
    again = forward_with_cache(model, ids[:, 20:], cache)
    torch.testing.assert_close(again, full[:, 20:], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="exceed"):
        forward_with_cache(model, torch.zeros(3, 40, dtype=torch.long), cache)


# --- speculative decoding ---------------------------------------------------------


def test_speculative_greedy_equals_target_greedy(seed):
    target = random_gpt(seed, config=SIZES, scale=0.3)
    draft = random_gpt(
        seed + 100, config=SIZES, scale=0.3, d_model=16, n_layers=1, n_heads=2
    )
    ids = torch.randint(61, (1, 6), generator=torch.Generator().manual_seed(seed))
    for k in (1, 3, 5):
        out, stats = speculative_generate(target, draft, ids, 25, k,
                                          SamplingConfig(temperature=0))  # fmt: skip
        assert torch.equal(out, generate(target, ids, 25, temperature=0))
        assert stats.new_tokens == 25 and 0 <= stats.accepted <= stats.proposed
    # the draft is the target: every proposal is accepted
    _, stats = speculative_generate(
        target, target, ids, 24, 3, SamplingConfig(temperature=0)
    )
    assert stats.acceptance_rate == 1.0 and stats.rounds == 6


def two_token_distribution(model, ids, config):
    """Exact probabilities of every two-token continuation under ``config``."""
    from llmbook.decoding.speculative import _probs

    with torch.no_grad():
        p1 = _probs(model(ids)[:, -1], ids, config)[0]
        vocab = p1.shape[0]
        seconds = torch.cat([ids.repeat(vocab, 1), torch.arange(vocab)[:, None]], 1)
        rows = [_probs(model(s[None])[:, -1], s[None], config)[0] for s in seconds]
    return (p1[:, None] * torch.stack(rows)).flatten()  # (vocab * vocab,)


def pooled_chisquare_pvalue(counts, probs, n):
    """Chi-square goodness of fit, cells expecting fewer than 5 pooled into one."""
    big = probs * n >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    expected = torch.cat([probs[big], probs[~big].sum()[None]]) * n
    return chisquare(observed, expected).pvalue


def test_speculative_sampling_follows_the_target_distribution():
    config = SamplingConfig(temperature=0.8, top_k=4)
    target = random_gpt(41, config=SIZES, scale=0.3, vocab_size=6)
    # the target, perturbed: a similar model
    draft = random_gpt(41, config=SIZES, scale=0.3, vocab_size=6)
    torch.manual_seed(9)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ids = torch.tensor([[1, 4, 2]])
    expected = two_token_distribution(target, ids, config)
    draft_only = two_token_distribution(draft, ids, config)
    assert 0.5 * (expected - draft_only).abs().sum() > 0.3  # the two models differ
    gen = torch.Generator().manual_seed(7)
    n = 2000
    counts = torch.zeros(36)
    accepted = proposed = 0
    for _ in range(n):
        out, stats = speculative_generate(
            target, draft, ids, 2, 3, config, generator=gen
        )
        counts[out[0, 3] * 6 + out[0, 4]] += 1
        accepted, proposed = accepted + stats.accepted, proposed + stats.proposed
    assert counts[expected == 0].sum() == 0, "produced what the target never would"
    assert pooled_chisquare_pvalue(counts, expected, n) > 1e-3
    # the test has power: sampling from the draft alone would be rejected
    assert pooled_chisquare_pvalue(counts, draft_only, n) < 1e-6
    assert 0.2 < accepted / proposed < 0.95  # some proposals rejected, most accepted


def test_accept_or_resample_rule():
    p = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.5, 0.5, 0.0]])
    gen = torch.Generator().manual_seed(0)
    # token 0 has target probability 0: always rejected, replaced from max(0, p - q)
    for _ in range(20):
        assert accept_or_resample(p, q, torch.tensor([0]), gen) == (0, 1)
    # token 1: p/q = 2, always accepted; the bonus token comes from p's second row
    bonus = [accept_or_resample(p, q, torch.tensor([1]), gen) for _ in range(2000)]
    assert all(a == 1 for a, _ in bonus)
    freq = torch.bincount(torch.tensor([t for _, t in bonus]), minlength=3) / 2000
    torch.testing.assert_close(freq, p[1], rtol=0, atol=0.04)


def test_speculative_checks_its_inputs():
    target, draft = (
        random_gpt(1, config=SIZES, scale=0.3),
        random_gpt(2, config=SIZES, scale=0.3, vocab_size=60),
    )
    with pytest.raises(ValueError, match="vocabularies differ"):
        speculative_generate(target, draft, torch.tensor([[1, 2]]), 5)
    with pytest.raises(ValueError, match="context length"):
        speculative_generate(target, target, torch.tensor([[1, 2]]), 47)


# --- fill-mask --------------------------------------------------------------------------


def test_fill_mask_reads_the_masks_row():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from llmbook.model.bert import EncoderConfig, MaskedLM
    from llmbook.model.hf import to_hf_bert

    words = ["[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog"]
    tok = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="a")
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, mask_token="[MASK]")
    torch.manual_seed(0)
    model = MaskedLM(EncoderConfig(vocab_size=8, context_length=16, d_model=16,
                                   n_heads=2, n_layers=1)).eval()  # fmt: skip
    text = "the cat [MASK] on the [MASK]"
    result = fill_mask(model, tokenizer, text, top_k=3)
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        hf_logits = to_hf_bert(model).eval()(ids).logits[0]
    for row, pos in zip(result, (2, 5), strict=True):
        probs = hf_logits[pos].softmax(-1)
        top = probs.topk(3)
        assert [w for w, _ in row] == [words[i] for i in top.indices]
        torch.testing.assert_close(torch.tensor([p for _, p in row]), top.values,
                                   rtol=0, atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask(model, tokenizer, "the cat sat")


def test_every_setting_combination_runs_batched():
    model = random_gpt(5, config=SIZES, scale=0.3)
    ids = torch.randint(61, (3, 4), generator=torch.Generator().manual_seed(5))
    for t, k, p in itertools.product((0, 0.5), (None, 4), (None, 0.7)):
        out = generate(model, ids, 6, t, k, top_p=p, generator=torch.Generator())
        assert out.shape == (3, 10) and out.dtype == torch.long
