"""``llmbook.model.hub.load_causal_lm``: the course GPT or a Hugging Face causal LM.

The hub path is exercised offline on a real Hugging Face directory: the course GPT
exported with ``export_hf`` and loaded back through ``AutoModelForCausalLM`` and
``AutoTokenizer``. Against the course model itself (float32, CPU):

* logits on fresh seeded random ids (batch 2, odd length): within atol 1e-4;
* ``llmbook.decoding.generate`` greedy tokens (the hub model runs uncached, the
  course GPT with its KV cache): identical;
* Chapter 8's harness (``CausalLMScorer`` + ``evaluate_multiple_choice`` on the
  next-line task built from the course corpus): scores within 1e-3 nats, same
  accuracy;
* Chapter 12's ``rag.answer`` with the RAG reader: identical answers.

Bad names fail with a clear error. Nothing is downloaded: ``HF_HUB_OFFLINE=1``.
"""

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch

from llmbook.apps import rag
from llmbook.data import course_splits
from llmbook.decoding import generate
from llmbook.metrics.harness import (
    CausalLMScorer,
    evaluate_multiple_choice,
    next_line_task,
)
from llmbook.model import GPT, HubCausalLM, export_hf, load_causal_lm
from llmbook.model.hub import course_models


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(course GPT, its tokenizer, hub-loaded copy, its tokenizer)."""
    out = export_hf("course-gpt", tmp_path_factory.mktemp("hf") / "course-gpt")
    course, course_tok = load_causal_lm("course-gpt")
    hub, hub_tok = load_causal_lm(out)
    return course, course_tok, hub, hub_tok


def test_course_name_gives_the_course_model():
    model, tokenizer = load_causal_lm("course-gpt-sft")
    assert isinstance(model, GPT) and not model.training
    assert tokenizer.eos_token_id == 0 and tokenizer.eos_token == "<|endoftext|>"
    assert {"course-gpt", "course-gpt-sft", "course-gpt-rag"} <= set(course_models())


def test_hub_model_looks_like_the_course_gpt(pair):
    course, course_tok, hub, hub_tok = pair
    assert isinstance(hub, HubCausalLM) and not hub.training
    assert hub.supports_kv_cache is False
    assert hub.config.context_length == course.config.context_length
    assert hub.config.vocab_size == course.config.vocab_size
    assert hub.hf_model.config._attn_implementation == "eager"
    assert hub_tok.eos_token == course_tok.eos_token
    assert hub_tok.eos_token_id == course_tok.eos_token_id
    text = course_splits().test[3][:400]
    assert hub_tok.encode(text) == course_tok.encode(text)
    assert hub_tok.decode(hub_tok.encode(text)) == text


def test_logits_match(pair):
    course, _, hub, _ = pair
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    ids = torch.randint(0, course.config.vocab_size, (2, 37), generator=g)
    with torch.no_grad():
        ours, theirs = course(ids), hub(ids)
    assert theirs.shape == ours.shape == (2, 37, course.config.vocab_size)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_too_long_input_is_an_error(pair):
    hub = pair[2]
    ids = torch.zeros(1, hub.config.context_length + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="context_length"):
        hub(ids)


def test_greedy_generation_matches(pair):
    course, tok, hub, _ = pair
    prompt = torch.tensor([tok.encode("def load_config(path):\n")])
    ours = generate(course, prompt, 24, temperature=0.0)
    theirs = generate(hub, prompt, 24, temperature=0.0)
    assert theirs.shape == (1, prompt.shape[1] + 24)
    assert torch.equal(theirs, ours)


def test_chapter8_harness_scores_match(pair):
    course, course_tok, hub, hub_tok = pair
    items = next_line_task(course_splits().test, n_items=12, seed=1)
    scores, accs = [], []
    for model, tok in ((course, course_tok), (hub, hub_tok)):
        scorer = CausalLMScorer(model, tok, model.config.context_length,
                                tok.eos_token_id, batch_size=16)  # fmt: skip
        contexts = [item.context for item in items for _ in item.choices]
        choices = [c for item in items for c in item.choices]
        scores.append(scorer.loglikelihood(contexts, choices))
        accs.append(evaluate_multiple_choice(scorer, items))
    assert scores[0].shape == (sum(len(i.choices) for i in items),)
    assert np.all(scores[0] < 0)
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-3, rtol=0)
    for key in ("acc", "acc_norm"):
        np.testing.assert_array_equal(accs[1][key], accs[0][key])


def test_rag_answers_match(tmp_path):
    out = export_hf("course-gpt-rag", tmp_path / "reader")
    course, course_tok = load_causal_lm("course-gpt-rag")
    hub, hub_tok = load_causal_lm(out)
    chunk = "json.loads: Deserialize a str or bytes instance to a Python object."
    prompts = [
        rag.question("os.path.join"),
        rag.rag_prompt(rag.question("json.loads"), [chunk], course_tok.encode, 100),
    ]
    for prompt in prompts:
        ours = rag.answer(course, course_tok, prompt)
        assert ours and rag.answer(hub, hub_tok, prompt) == ours


def test_bad_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        load_causal_lm(tmp_path / "missing")
    with pytest.raises(ValueError, match="no such directory"):
        load_causal_lm("./not/a/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without a config.json"):
        load_causal_lm(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a course model.*offline"):
        load_causal_lm("no-such-model-anywhere-xyz")
