"""Instruction tuning (``llmbook.finetune.sft``): the recipe of ``course-gpt-sft``.

* the answer-only loss is cross-entropy over the answer tokens, nothing else;
* a batch cuts answers to ``max_tokens`` and refuses a prompt that leaves no room;
* the default config is Chapter 7 Section 4.3's LoRA run;
* a short run of the command writes a model that loads, differs from its base only in
  the LoRA targets, and records what it measured.

The shipped model's recorded numbers are checked in ``tests/unit/test_course_models.py``.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import random_gpt

from llmbook.finetune import sft
from llmbook.model import GPT, from_pretrained, load_tokenizer
from llmbook.model.pretrained import pretrained_metadata


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("course-gpt")


SIZES = {"vocab_size": 2048, "context_length": 128, "d_model": 32, "n_heads": 2,
         "n_layers": 1, "d_ff": 64, "dropout": 0.0}  # fmt: skip


def test_answer_loss_is_cross_entropy_on_the_answer_only(tokenizer):
    model = random_gpt(0, config=SIZES)
    examples = [("What does `f` do?\n", "Return the sum."), ("x\n\nWhat?\n", "No.")]
    batch = sft.answer_batch(examples, tokenizer.encode, tokenizer.eos_token_id, 128)
    assert batch.shape[:2] == (2, 2)
    ids, labels = batch[:, 0], batch[:, 1]
    for row, (prompt, ref) in enumerate(examples):
        p, a = (
            tokenizer.encode(prompt),
            tokenizer.encode(ref) + [tokenizer.eos_token_id],
        )
        pad = ids.shape[1] - len(p) - len(a)
        assert ids[row].tolist() == p + a + [tokenizer.eos_token_id] * pad
        assert labels[row].tolist() == [-100] * len(p) + a + [-100] * pad
    logits = model(ids[:, :-1])
    total, count = 0.0, 0
    for row in range(2):
        for t in range(ids.shape[1] - 1):
            if labels[row, t + 1] != -100:
                total = total + F.cross_entropy(logits[row, t], ids[row, t + 1])
                count += 1
    torch.testing.assert_close(sft.answer_loss(model, batch), total / count)


def test_answers_are_cut_to_max_tokens_and_long_prompts_refused(tokenizer):
    prompt = "What does `f` do?\n"
    answer = "Return the sum of every element of the list, one after another."
    p = tokenizer.encode(prompt)
    batch = sft.answer_batch([(prompt, answer)], tokenizer.encode,
                             tokenizer.eos_token_id, len(p) + 4)  # fmt: skip
    ids, labels = batch[0, 0].tolist(), batch[0, 1].tolist()
    assert len(ids) == len(p) + 4
    assert ids[: len(p) + 3] == p + tokenizer.encode(answer)[:3]
    assert labels[-1] == ids[-1] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="no room"):
        sft.answer_batch([(prompt, answer)], tokenizer.encode, 0, len(p))
    with pytest.raises(ValueError, match="positive"):
        sft.SFTConfig(steps=0)


def test_default_recipe_is_chapter_7s_lora_run():
    config = sft.SFTConfig()
    assert (config.r, config.alpha, config.steps, config.batch_size) == (8, 16, 100, 8)
    assert config.lr == 3e-3 and config.max_tokens == 48
    assert set(config.targets) == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1",
                                   "fc2"}  # fmt: skip


def test_a_short_run_of_the_command_writes_a_tuned_model_with_its_record(
    tmp_path, capsys
):
    out = sft.main(["--out", str(tmp_path / "sft"), "--steps", "3", "--quiet"])
    printed = capsys.readouterr().out.splitlines()
    results = pretrained_metadata(out)["results"]
    assert json.loads(printed[0]) == results and printed[1] == f"wrote {out}"
    tuned, base = from_pretrained(out), from_pretrained("course-gpt")
    assert isinstance(tuned, GPT) and tuned.config == base.config
    changed = [k for k, v in tuned.state_dict().items()
               if not torch.equal(v, base.state_dict()[k])]  # fmt: skip
    targets = sft.SFTConfig().targets
    assert changed and all(k.split(".")[-2] in targets for k in changed)
    assert results["made_by"].startswith("python -m llmbook.finetune.sft")
    assert results["sft_config"]["steps"] == 3 and results["train_pairs"] > 1000
    assert results["held_out_answer_loss"] != results["base_held_out_answer_loss"]
    assert results["val_perplexity_30_docs"] > 1
