"""The reader of Chapter 12's retrieval-augmented answering (``llmbook.apps.rag``).

* the training examples come from the training pairs only, in the configured mix of
  gold, random and no passage, and fit the prompt budget;
* ``evaluate`` answers four ways, scores with chrF and prints the documented line;
* a short tuning run writes a model that loads and differs from ``course-gpt-sft``.

The shipped reader's line and its target are checked in ``tests/unit/test_course_models.py``.
"""

import dataclasses
import random
import re

import pytest
import torch
from helpers import random_gpt

from llmbook.apps import rag
from llmbook.apps.retrieval import first_sentence, instruction_pairs
from llmbook.data.corpus import STDLIB_MODULES
from llmbook.metrics import corpus_chrf
from llmbook.model import GPT, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("course-gpt-sft")


@pytest.fixture(scope="module")
def chunks():
    return [c for _, c in rag.course_chunks()]


@pytest.fixture(scope="module")
def pairs():
    return instruction_pairs()


SIZES = {"vocab_size": 2048, "context_length": 128, "d_model": 32, "n_heads": 2,
         "n_layers": 1, "d_ff": 64, "dropout": 0.0}  # fmt: skip


def test_reader_examples_mix_sources_and_fit(chunks, pairs, tokenizer):
    config = rag.ReaderConfig(seed=3)
    examples = rag.reader_examples(chunks, tokenizer.encode, config, pairs[0])
    train_names = {n for n, _ in pairs[0]}
    held_names = {n for n, _ in pairs[1]}
    kinds = {"gold": 0, "random": 0, "none": 0}
    modules = []
    for prompt, ref in examples:
        asked = re.search(
            r"(What does|Which module defines) `([^`]+)`( do)?\?\n$", prompt
        )
        name = asked.group(2)
        assert name in train_names and name not in held_names
        assert len(tokenizer.encode(prompt)) <= rag.PROMPT_TOKENS == 128 - rag.MAX_NEW
        if asked.group(1) == "Which module defines":
            # the answer is the module, which the gold chunk's title holds
            assert ref in STDLIB_MODULES
            modules.append(prompt == rag.module_question(name))
            continue
        if prompt == rag.question(name):
            kinds["none"] += 1
        elif rag.relevant_key(ref) in " ".join(prompt.split()):
            kinds["gold"] += 1
        else:
            kinds["random"] += 1
    n, asked_what = len(examples), sum(kinds.values())
    assert n > 1000
    assert len(modules) / n == pytest.approx(0.3, abs=0.04)
    assert sum(modules) / len(modules) == pytest.approx(0.2, abs=0.06)  # no passage
    assert kinds["gold"] / asked_what == pytest.approx(0.6, abs=0.04)
    assert kinds["none"] / asked_what == pytest.approx(0.2, abs=0.04)
    assert kinds["random"] / asked_what == pytest.approx(0.2, abs=0.04)
    assert rag.reader_examples(chunks, tokenizer.encode, config, pairs[0]) == examples
    with pytest.raises(ValueError, match="gold_share"):
        rag.ReaderConfig(gold_share=0.9, random_share=0.2)
    with pytest.raises(ValueError, match="module_share"):
        rag.ReaderConfig(module_share=1.5)


def test_module_questions_read_the_module_from_the_title(chunks):
    assert rag.module_of("email.message.Message.set_type: quoting as is.") == (
        "email.message"
    )
    assert rag.module_of("abc.abstractmethod: A decorator.") == "abc"
    assert rag.module_of("assert: The assert statement.") is None  # a topic chunk
    questions = rag.held_out_questions(chunks)
    asked = rag.module_questions(questions, chunks)
    assert 0.9 * len(questions) <= len(asked) <= len(questions)
    for name, module, relevant in asked:
        assert relevant and all(rag.module_of(chunks[i]) == module for i in relevant)
        title = chunks[min(relevant)].split(": ", 1)[0]
        assert title.startswith(module + ".") and title.endswith("." + name)


def test_evaluate_answers_four_ways_and_prints_the_line(chunks, pairs, tokenizer):
    questions = rag.held_out_questions(chunks)
    assert len(questions) >= 100
    held = {n for n, _ in pairs[1]}
    assert all(name in held for name, _, _ in questions)
    picked = random.Random(0).sample(questions, 3)
    gold = [min(rel) for _, _, rel in picked]
    ev = rag.evaluate(
        random_gpt(1, config=SIZES), tokenizer, chunks, picked, gold, progress=False
    )
    assert list(ev.answers) == list(rag.SYSTEMS)
    # with the relevant chunk on top, extraction returns the reference itself
    for (_, ref, _), extracted in zip(picked, ev.answers["extractive"], strict=True):
        assert extracted == first_sentence(ref) == ref
    assert ev.chrf["extractive"] == pytest.approx(100.0)
    refs = [ref for _, ref, _ in picked]
    for system, hyps in ev.answers.items():
        assert ev.chrf[system] == pytest.approx(corpus_chrf(hyps, [refs]))
    line = ev.line()
    pattern = (r"rag closed-book chrF [\d.]+, with retrieval [\d.]+, oracle passage "
               r"[\d.]+, extractive 100\.0; B-A -?[\d.]+\.\.-?[\d.]+; 3 questions")  # fmt: skip
    assert re.fullmatch(pattern, line), line
    assert ev.gain.low <= ev.gain.difference <= ev.gain.high
    with pytest.raises(ValueError, match="retrieved chunks"):
        rag.evaluate(
            random_gpt(1, config=SIZES),
            tokenizer,
            chunks,
            picked,
            gold[:2],
            progress=False,
        )


def test_a_short_tuning_run_writes_a_loadable_reader(tmp_path, monkeypatch):
    def no_evaluation(reader, progress=True):
        ev = rag.RagEvaluation(["a"], {s: ["a"] for s in rag.SYSTEMS})
        ev.chrf = dict.fromkeys(rag.SYSTEMS, 100.0)
        ev.gain = rag.PairedResult(0.0, 0.0, 0.0, 1.0)
        ev.modules = dataclasses.replace(ev)
        return ev

    monkeypatch.setattr(rag, "evaluate_reader", no_evaluation)
    config = rag.ReaderConfig(steps=3, batch_size=2, warmup_steps=1)
    out = rag.train_reader(tmp_path / "reader", config, progress=False)
    from llmbook.model import from_pretrained
    from llmbook.model.pretrained import pretrained_metadata

    reader, sft = from_pretrained(out), from_pretrained("course-gpt-sft")
    assert isinstance(reader, GPT) and reader.config == sft.config
    changed = [k for k, v in reader.state_dict().items()
               if not torch.equal(v, sft.state_dict()[k])]  # fmt: skip
    assert changed and all(k.split(".")[-2] in config.targets for k in changed)
    results = pretrained_metadata(out)["results"]
    assert results["reader_config"]["steps"] == 3
    assert results["evaluate_line"].startswith("rag closed-book chrF 100.0")
    assert results["module_line"].startswith("rag module questions closed-book chrF")
