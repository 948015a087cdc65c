"""The models shipped with the package besides the course GPT (Chapters 6, 7 and 12).

* ``course-gpt-draft`` (the draft model of speculative decoding): a much smaller
  ``GPT`` with the course tokenizer, byte for byte, and the course GPT's context;
  its validation perplexity, recomputed, is the recorded one and lies between the
  course GPT's and the unigram model's (computed here on the same tokens, add-one
  smoothed).
* ``course-mlm`` (the masked-LM encoder): a ``MaskedLM`` whose tokenizer is the
  course tokenizer plus ``<|mask|>`` at id 2048; ``python -m llmbook.pretrain_mlm
  --evaluate course-mlm`` prints the line the book quotes, with masked-token top-1
  accuracy at least four times the unigram baseline's (always guess the most frequent
  training token) on the whole validation split, and reproduces the recorded scores;
  its logits equal Hugging Face's ``BertForMaskedLM`` holding its weights
  (``to_hf_bert``) within atol 1e-5 on seeded random ids (batch 3, odd lengths, with
  and without padding).

* ``course-gpt-rag`` (Chapter 12's reader): ``python -m llmbook.apps.rag --evaluate``
  shows retrieval adding at least 10 chrF, with a paired interval above 0.

Nothing is downloaded: Hugging Face runs with ``HF_HUB_OFFLINE=1``.
"""

import math
import re

import pytest
import torch
from tokenizers import Tokenizer

from llmbook.data import course_data, course_tokenizer
from llmbook.data.tokenization import MASK_TOKEN
from llmbook.decoding import fill_mask
from llmbook.model import GPT, MaskedLM, from_pretrained, to_hf_bert
from llmbook.model.bert import EncoderConfig
from llmbook.model.pretrained import (
    load_tokenizer,
    pretrained_metadata,
    save_pretrained,
    tokenizer_path,
)
from llmbook.train import (
    evaluate_perplexity,
    mlm_tokenizer,
)

ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(scope="module")
def data():
    return course_data(2048, "python")


@pytest.fixture(scope="module")
def mlm():
    return from_pretrained("course-mlm")


# --- the draft GPT -------------------------------------------------------------------


def unigram_perplexity(data) -> float:
    """Add-one unigram model of the training stream, scored as ``evaluate_perplexity``
    scores the GPTs: every validation token and one EOS per document."""
    counts = torch.bincount(data.train_stream, minlength=2048).double() + 1.0
    logp = (counts / counts.sum()).log()
    val = torch.tensor([t for doc in data.val_docs for t in (*doc, data.eos_id)])
    return math.exp(-logp[val].mean().item())


def test_draft_is_a_small_gpt_with_the_course_tokenizer(data):
    draft, big = from_pretrained("course-gpt-draft"), from_pretrained("course-gpt")
    assert isinstance(draft, GPT) and not draft.training
    assert draft.config.vocab_size == big.config.vocab_size == 2048
    assert draft.config.context_length == big.config.context_length == 128
    n_draft = sum(p.numel() for p in draft.parameters())
    assert n_draft * 3 < sum(p.numel() for p in big.parameters())
    saved = Tokenizer.from_file(str(tokenizer_path("course-gpt-draft"))).to_str()
    assert saved == course_tokenizer(2048, "python").to_str()
    assert tokenizer_path("course-gpt-draft").read_bytes() == (
        tokenizer_path("course-gpt").read_bytes()
    )
    assert load_tokenizer("course-gpt-draft").mask_token is None
    # the shipped weights still score what their run recorded, on every validation
    # token; the course GPT's own figure is recomputed in tests/unit/train/test_pretrain.py
    draft_ppl = evaluate_perplexity(draft, data.val_docs, data.eos_id)
    recorded = pretrained_metadata("course-gpt-draft")["results"]["val_perplexity"]
    assert draft_ppl == pytest.approx(recorded, rel=1e-4)
    big_ppl = pretrained_metadata("course-gpt")["results"]["val_perplexity"]
    assert big_ppl < draft_ppl < 0.5 * unigram_perplexity(data)


def test_instruction_tuned_gpt_reproduces_its_recorded_perplexity():
    """course-gpt-sft (Chapter 7's LoRA instruction tuning, merged, by ``python -m
    llmbook.finetune.sft``; scored in Chapter 8): the course tokenizer, and the
    perplexities recorded for it and its base on the first 30 validation documents,
    the tuned one above the base's (forgetting)."""
    from llmbook.data import course_splits
    from llmbook.train import evaluate_perplexity

    sft, base = from_pretrained("course-gpt-sft"), from_pretrained("course-gpt")
    assert isinstance(sft, GPT) and sft.config == base.config
    assert tokenizer_path("course-gpt-sft").read_bytes() == (
        tokenizer_path("course-gpt").read_bytes()
    )
    results = pretrained_metadata("course-gpt-sft")["results"]
    assert results["made_by"].startswith("python -m llmbook.finetune.sft")
    tokenizer = load_tokenizer("course-gpt-sft")
    docs = [tokenizer.encode(doc) for doc in course_splits().val[:30]]
    eos = tokenizer.eos_token_id
    ppl = evaluate_perplexity(sft, docs, eos)
    assert ppl == pytest.approx(results["val_perplexity_30_docs"], rel=1e-4)
    base_ppl = evaluate_perplexity(base, docs, eos)
    assert base_ppl == pytest.approx(results["base_val_perplexity_30_docs"], rel=1e-4)
    assert ppl > base_ppl


# --- the masked LM -------------------------------------------------------------------


def test_mlm_tokenizer_has_the_mask_token(mlm):
    assert isinstance(mlm, MaskedLM) and not mlm.training
    assert mlm.config.vocab_size == 2049
    tokenizer = load_tokenizer("course-mlm")
    assert tokenizer.mask_token == MASK_TOKEN and tokenizer.mask_token_id == 2048
    assert len(tokenizer) == 2049
    ids = tokenizer(f"return the {MASK_TOKEN} of x", add_special_tokens=False)
    assert ids["input_ids"].count(2048) == 1
    saved = Tokenizer.from_file(str(tokenizer_path("course-mlm")))
    assert saved.to_str() == mlm_tokenizer().to_str()
    assert from_pretrained("course-gpt").config.vocab_size == 2048  # unchanged


def test_mlm_evaluate_line_meets_its_target_and_reproduces(capsys):
    """``python -m llmbook.pretrain_mlm --evaluate course-mlm`` on the whole validation
    split: the line the book quotes, masked-token top-1 at least four times the
    unigram guess's, and the numbers the training run recorded."""
    from llmbook import pretrain_mlm

    scores = pretrain_mlm.evaluate("course-mlm")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    a, a5, u, n = (scores[k] for k in ("accuracy", "top5_accuracy",
                                        "unigram_accuracy", "masked_tokens"))  # fmt: skip
    assert line == (f"course-mlm masked-token top-1 {a:.3f}, top-5 {a5:.3f}, "
                    f"unigram top-1 {u:.3f}, {n} masked tokens")  # fmt: skip
    assert a >= 4 * u and a5 > scores["unigram_top5_accuracy"] + 0.1
    assert n > 20_000
    results = pretrained_metadata("course-mlm")["results"]
    assert results["val_masked_tokens"] == n
    for key, recorded in (("accuracy", "val_accuracy"),
                          ("top5_accuracy", "val_top5_accuracy"),
                          ("perplexity", "val_perplexity")):  # fmt: skip
        assert scores[key] == pytest.approx(results[recorded], rel=1e-6), key


@pytest.fixture(scope="module")
def hf_model(mlm):
    return to_hf_bert(mlm)


@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_mlm_logits_match_hf_bert(mlm, hf_model, padded):
    gen = torch.Generator().manual_seed(7 + padded)
    for seq in (1, 17, mlm.config.context_length):
        ids = torch.randint(2049, (3, seq), generator=gen)
        lengths = torch.tensor([seq, max(1, seq - 5), 1 if padded else seq])
        mask = (torch.arange(seq) < lengths[:, None]).long() if padded else None
        with torch.no_grad():
            theirs = hf_model(ids, attention_mask=mask).logits
            ours = mlm(ids, mask)
        assert ours.shape == (3, seq, 2049)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=ATOL)


def test_fill_mask_ranks_tokens(mlm):
    tokenizer = load_tokenizer("course-mlm")
    [best] = fill_mask(mlm, tokenizer, f"def __init__(self, {MASK_TOKEN}):")
    assert len(best) == 5
    probs = [p for _, p in best]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    with pytest.raises(ValueError, match=re.escape(f"no {MASK_TOKEN} in the text")):
        fill_mask(mlm, tokenizer, "no mask here")


def test_save_and_load_a_masked_lm(tmp_path):
    torch.manual_seed(0)
    model = MaskedLM(EncoderConfig(vocab_size=2049, context_length=16, d_model=16,
                                   n_heads=2, n_layers=1)).eval()  # fmt: skip
    save_pretrained(model, tmp_path, tokenizer=mlm_tokenizer())
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded, MaskedLM)
    assert pretrained_metadata(tmp_path)["architecture"] == "MaskedLM"
    ids = torch.randint(2049, (2, 9))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    assert load_tokenizer(tmp_path).mask_token_id == 2048


def test_rag_reader_evaluate_line_meets_its_target(capsys):
    """``python -m llmbook.apps.rag --evaluate`` on every held-out question: retrieval
    adds at least 10 chrF to the reader's closed-book answers, the 95% paired interval
    of the gain is above 0, on at least 100 questions, for both question types (what a
    definition does; which module defines it, where the first-sentence rule fails);
    the numbers are the ones its training run recorded (within 0.5 chrF: greedy
    decoding may flip a token when the thread count changes the order of sums)."""
    from llmbook.apps import rag

    ev = rag.main(["--evaluate"])
    lines = capsys.readouterr().out.strip().splitlines()
    line = lines[-1]
    assert line == ev.line()
    assert lines[-2] == ev.modules.line("rag module questions")
    a, b = ev.chrf["closed book"], ev.chrf["retrieval"]
    assert b - a >= 10 and ev.gain.low > 0 and len(ev.references) >= 100
    assert ev.chrf["oracle passage"] >= b  # a relevant passage is the best case
    recorded = pretrained_metadata(rag.READER)["results"]["chrf"]
    for system, value in ev.chrf.items():
        assert value == pytest.approx(recorded[system], abs=0.5), system
    assert line.startswith("rag closed-book chrF ") and line.endswith(
        f"; {len(ev.references)} questions"
    )
    # the question whose answer is not a first sentence: the module, in the title
    modules = ev.modules
    a, b = modules.chrf["closed book"], modules.chrf["retrieval"]
    assert b - a >= 10 and modules.gain.low > 0 and len(modules.references) >= 100
    assert modules.chrf["extractive"] < a  # the first-sentence rule has no answer
    recorded = pretrained_metadata(rag.READER)["results"]["module_chrf"]
    for system, value in modules.chrf.items():
        assert value == pytest.approx(recorded[system], abs=0.5), system
