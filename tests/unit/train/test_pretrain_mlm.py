"""The masked objective of the one training loop, and ``python -m llmbook.pretrain_mlm``.

``TrainConfig(objective="masked")`` trains a ``MaskedLM`` in ``llmbook.train.train``:
it learns, repeats bit for bit, resumes exactly, and its step is BERT's loss on the
masking ``objective_loss`` draws. The command trains, saves and evaluates, ending with
the line the book quotes.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
import torch

from llmbook import pretrain_mlm
from llmbook.data import course_data
from llmbook.model import GPTConfig, MaskedLM, from_pretrained
from llmbook.train import (
    PRESETS,
    TrainConfig,
    evaluate_mlm,
    objective_loss,
    train,
)
from llmbook.train.objectives import mlm_loss

LINE = re.compile(
    r"^(\S+) masked-token top-1 (\d\.\d{3}), top-5 (\d\.\d{3}), unigram top-1 "
    r"(\d\.\d{3}), (\d+) masked tokens$"
)


def tiny_mlm(**changes) -> TrainConfig:
    """PRESETS["mlm"] shrunk to seconds: one layer of width 32, context 32."""
    small = {"context_length": 32, "d_model": 32, "n_heads": 2, "n_layers": 1}
    return PRESETS["mlm"].replace(model=small, batch_size=8, max_steps=30, lr=3e-3,
                                  min_lr=3e-4, warmup_steps=5, eval_every=10,
                                  **changes)  # fmt: skip


@functools.cache
def small_data():
    """The course data with the first 60 validation documents (evaluations in
    seconds; the training stream is the whole split)."""
    data = course_data()
    return dataclasses.replace(data, val_docs=data.val_docs[:60])


def run(config: TrainConfig, **kwargs):
    torch.manual_seed(config.seed)
    model = MaskedLM(config.model)
    history = train(model, small_data(), config, progress=False, **kwargs)
    return model, history


@functools.cache
def straight(ema_decay: float):
    return run(tiny_mlm(ema_decay=ema_decay))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_masked_objective_learns_and_repeats():
    model, history = straight(0.0)
    again, history_again = run(tiny_mlm(ema_decay=0.0))
    assert same_weights(model, again) and history.loss == history_again.loss
    assert history.eval_step == [10, 20, 30]
    data = small_data()
    scores = evaluate_mlm(model, data.val_docs, eos_id=data.eos_id, mask_id=2048)
    assert scores["perplexity"] == pytest.approx(history.val_perplexity[-1], rel=1e-5)
    torch.manual_seed(0)
    untrained = evaluate_mlm(MaskedLM(model.config), data.val_docs, eos_id=data.eos_id,
                             mask_id=2048)["perplexity"]  # fmt: skip
    assert untrained > 1500  # about the vocabulary's size
    # masked-token perplexity falls at every evaluation, to well below the untrained
    assert history.val_perplexity == sorted(history.val_perplexity, reverse=True)
    assert history.val_perplexity[-1] < 0.6 * untrained


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_masked_run_resumes_exactly(tmp_path, ema_decay):
    ckpt = tmp_path / "mlm.pt"
    model, history = straight(ema_decay)
    config = tiny_mlm(ema_decay=ema_decay)
    run(config, steps=20, checkpoint_path=ckpt)
    torch.manual_seed(99)  # resuming must not depend on the global RNG
    resumed = MaskedLM(config.model)
    rest = train(resumed, small_data(), config, checkpoint_path=ckpt, resume=True,
                 progress=False)  # fmt: skip
    assert same_weights(resumed, model)
    assert rest.loss == history.loss and rest.val_perplexity == history.val_perplexity


def test_objective_loss_is_berts_loss_on_a_seeded_masking():
    config = tiny_mlm()
    torch.manual_seed(0)
    model = MaskedLM(config.model)
    batch = torch.randint(0, 2048, (4, 32), generator=torch.Generator().manual_seed(1))
    for step in (0, 7):
        ours = objective_loss(config, step, eos_id=0)(model, batch)
        again = objective_loss(config, step, eos_id=0)(model, batch)
        theirs = mlm_loss(
            model, batch, mask_id=2048, vocab_size=2049, special_ids=(0,),
            mask_prob=config.mask_prob,
            generator=torch.Generator().manual_seed(config.seed * 1_000_003 + step),
        )  # fmt: skip
        assert torch.equal(ours, again) and torch.equal(ours, theirs)
    other = objective_loss(config, 8, eos_id=0)(model, batch)
    assert not torch.equal(other, ours)  # each step masks afresh


def test_objective_and_model_must_agree():
    with pytest.raises(ValueError, match="objective must be one of"):
        TrainConfig(objective="denoising")
    with pytest.raises(TypeError, match="masked objective trains a EncoderConfig"):
        TrainConfig(objective="masked", model=GPTConfig())
    with pytest.raises(ValueError, match="mask_prob"):
        PRESETS["mlm"].replace(mask_prob=1.0)
    mlm = PRESETS["mlm"]
    assert TrainConfig.from_dict(mlm.to_dict()) == mlm and mlm.mask_id == 2048
    gpt = PRESETS["tiny"]
    with pytest.raises(ValueError, match="config.model"):
        train(MaskedLM(tiny_mlm().model), small_data(), gpt, progress=False)


def test_command_trains_saves_and_evaluates(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(PRESETS, "mlm", tiny_mlm())
    out = tmp_path / "tiny-mlm"
    results = pretrain_mlm.main(["--out", str(out), "--steps", "12", "--quiet",
                                 "--device", "cpu"])  # fmt: skip
    trained_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (out / "model.safetensors").exists() and not (out / "checkpoint.pt").exists()
    assert results["train_tokens_seen"] == 12 * 8 * 32
    assert isinstance(from_pretrained(out), MaskedLM)
    scores = pretrain_mlm.main(["--evaluate", str(out)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == trained_line
    name, top1, top5, unigram, n = LINE.fullmatch(line).groups()
    assert name == "tiny-mlm" and int(n) == scores["masked_tokens"]
    assert (
        float(top1) == round(scores["accuracy"], 3) == round(results["val_accuracy"], 3)
    )
    assert float(top5) == round(scores["top5_accuracy"], 3)
    assert float(unigram) == round(scores["unigram_accuracy"], 3)
