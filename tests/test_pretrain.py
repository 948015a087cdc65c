"""llmbook.pretrain: perplexity on the baseline's terms, determinism, resume, the
shipped course GPT, FLOP accounting, and the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmbook import pretrain
from llmbook.baselines import NGRAM_BASELINE
from llmbook.pretrain import (
    PRESETS,
    TrainConfig,
    course_data,
    evaluate_perplexity,
    from_pretrained,
    model_flops_per_token,
    save_pretrained,
    train,
    update_ema,
    window_iterator,
)
from llmbook.transformer import GPT, GPTConfig


def tiny_model(context_length: int = 8, vocab_size: int = 50, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, context_length=context_length,
                       d_model=16, n_heads=2, n_layers=2)  # fmt: skip
    return GPT(config).eval()


def random_docs(generator: torch.Generator, n_docs: int, vocab_size: int = 50):
    lengths = torch.randint(0, 13, (n_docs,), generator=generator).tolist()
    return [
        torch.randint(1, vocab_size, (n,), generator=generator).tolist()
        for n in lengths
    ]


@pytest.mark.parametrize("n_docs", [1, 3, 9])
def test_perplexity_with_stride_one_equals_token_by_token(n_docs):
    gen = torch.Generator().manual_seed(n_docs)
    model = tiny_model()
    docs = random_docs(gen, n_docs)
    stream = [0]
    for doc in docs:
        stream += doc + [0]
    nll = []
    for t in range(len(stream) - 1):  # predict stream[t + 1] from at most 8 tokens
        context = torch.tensor([stream[max(0, t + 1 - 8) : t + 1]])
        logp = F.log_softmax(model(context)[0, -1], dim=-1)
        nll.append(-logp[stream[t + 1]].item())
    expected = math.exp(sum(nll) / len(nll))
    assert len(nll) == sum(len(d) + 1 for d in docs)  # the n-gram's count
    got = evaluate_perplexity(model, docs, eos_id=0, stride=1, batch_size=5)
    assert got == pytest.approx(expected, rel=1e-5)


def test_perplexity_whole_stream_in_one_window():
    model = tiny_model(context_length=64)
    docs = [[5, 6, 7], [8, 9], [10]]
    stream = torch.tensor([[0, 5, 6, 7, 0, 8, 9, 0, 10, 0]])
    loss = F.cross_entropy(model(stream[:, :-1])[0], stream[0, 1:])
    assert evaluate_perplexity(model, docs, eos_id=0) == pytest.approx(
        math.exp(loss.item()), rel=1e-5
    )
    # stride does not matter when one window holds everything
    assert evaluate_perplexity(model, docs, eos_id=0, stride=1) == pytest.approx(
        math.exp(loss.item()), rel=1e-5
    )


def test_perplexity_restores_mode_and_rejects_bad_input():
    model = tiny_model().train()
    evaluate_perplexity(model, [[1, 2, 3]], eos_id=0)
    assert model.training
    with pytest.raises(ValueError, match="stride"):
        evaluate_perplexity(model, [[1, 2]], eos_id=0, stride=9)
    with pytest.raises(ValueError, match="empty"):
        evaluate_perplexity(model, [], eos_id=0)


def test_untrained_model_perplexity_is_near_vocab_size():
    data = course_data(32)
    model = GPT(PRESETS["tiny"].model_config())
    ppl = evaluate_perplexity(model, data.val_docs[:20], data.eos_id)
    assert 0.8 * 2048 < ppl < 1.25 * 2048
    assert data.val_predictions == 17586 + len(data.val_docs)


def test_window_iterator_slices_the_stream_and_resumes():
    stream = torch.arange(100) * 7  # distinct values: a window's origin is unambiguous
    batches = window_iterator(stream, context_length=9, batch_size=4, seed=3)
    first = [next(batches) for _ in range(5)]
    for batch in first:
        assert batch.shape == (4, 10) and batch.dtype == stream.dtype
        starts = batch[:, 0] // 7
        assert torch.equal(batch, stream[starts[:, None] + torch.arange(10)])
        assert int(starts.max()) <= 100 - 10  # the last window ends at the last token
    again = window_iterator(stream, 9, 4, seed=3)
    assert all(torch.equal(a, next(again)) for a in first)  # seeded
    resumed = window_iterator(stream, 9, 4, seed=3, start_step=3)
    assert torch.equal(next(resumed), first[3])
    starts = torch.cat([next(batches)[:, 0] // 7 for _ in range(200)])
    assert len(set(starts.tolist())) > 80  # offsets cover the stream, not a few blocks
    with pytest.raises(ValueError, match="too few"):
        next(window_iterator(torch.arange(9), 9, 1))
    with pytest.raises(ValueError, match="1-D"):
        next(window_iterator(torch.zeros(2, 50, dtype=torch.long), 9, 1))


def test_course_stream_matches_the_blocks():
    data = course_data(32)
    blocks = data.train_blocks
    assert torch.equal(data.train_stream[: blocks.numel() - len(blocks) + 1],
                       torch.cat([blocks[:, :-1].flatten(), blocks[-1, -1:]]))  # fmt: skip
    with pytest.raises(ValueError, match="sampling"):
        TrainConfig(sampling="shuffle")


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**PRESETS["tiny"].to_dict(), **changes})


def run_tiny(steps=None, sampling="windows", ema_decay=0.0, **kwargs):
    config = tiny_config(sampling=sampling, ema_decay=ema_decay)
    torch.manual_seed(config.seed)
    model = GPT(config.model_config())
    data = course_data(config.context_length)
    history = train(model, data, config, steps=steps, progress=False, **kwargs)
    return model, history


def test_training_is_deterministic_and_learns():
    model_a, hist_a = run_tiny()
    model_b, hist_b = run_tiny()
    assert state_equal(model_a, model_b)
    assert hist_a.loss == hist_b.loss
    assert len(hist_a.loss) == PRESETS["tiny"].max_steps
    assert hist_a.val_perplexity[-1] < 0.5 * 2048  # far below an untrained model
    assert hist_a.eval_step == [10, 20, 30]


@pytest.mark.parametrize(("sampling", "ema_decay"),
                         [("windows", 0.0), ("blocks", 0.0), ("windows", 0.9)])  # fmt: skip
def test_resume_equals_uninterrupted(tmp_path, sampling, ema_decay):
    ckpt = tmp_path / "ckpt.pt"
    straight, hist_straight = run_tiny(sampling=sampling, ema_decay=ema_decay)
    _, first = run_tiny(steps=10, sampling=sampling, ema_decay=ema_decay,
                        checkpoint_path=ckpt)  # fmt: skip
    assert ckpt.exists() and first.step[-1] == 10
    torch.manual_seed(123)  # a different RNG state: resume must restore it
    config = tiny_config(sampling=sampling, ema_decay=ema_decay)
    model = GPT(config.model_config())
    resumed = train(model, course_data(config.context_length), config,
                    checkpoint_path=ckpt, resume=True, progress=False)  # fmt: skip
    assert state_equal(model, straight)
    assert resumed.loss == hist_straight.loss
    assert resumed.val_perplexity == hist_straight.val_perplexity
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(model, course_data(config.context_length), config,
              checkpoint_path=tmp_path / "missing.pt", resume=True, progress=False)  # fmt: skip


def test_update_ema_follows_the_formula_and_the_run_returns_the_average():
    torch.manual_seed(0)
    average, model = tiny_model(), tiny_model(seed=1)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    update_ema(average, model, decay=0.75)
    for name, value in average.state_dict().items():
        expected = 0.75 * before[name] + 0.25 * model.state_dict()[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    assert average.lm_head.weight is average.tok_emb.weight  # tying kept
    # a run with an average returns it: its weights differ from the last iterate's
    raw, _ = run_tiny()
    averaged, hist = run_tiny(ema_decay=0.9)
    assert not state_equal(raw, averaged)
    assert hist.loss == run_tiny()[1].loss  # the average does not change training
    with pytest.raises(ValueError, match="ema_decay"):
        tiny_config(ema_decay=1.0)


def test_save_and_load_pretrained_round_trip(tmp_path):
    model = tiny_model()
    save_pretrained(model, tmp_path / "m", {"note": "test"})
    loaded = from_pretrained(tmp_path / "m")
    assert state_equal(model, loaded)
    assert loaded.lm_head.weight is loaded.tok_emb.weight  # tying survives loading
    assert json.loads((tmp_path / "m" / "config.json").read_text())["note"] == "test"
    with pytest.raises(FileNotFoundError, match="shipped models"):
        from_pretrained(tmp_path / "nothing-here")


def test_shipped_course_gpt_reproduces_its_recorded_perplexity():
    meta = pretrain.pretrained_metadata("course-gpt")
    results = meta["results"]
    model = from_pretrained("course-gpt")
    config = TrainConfig.from_dict(results["train_config"])
    assert config == PRESETS["cpu"]  # made by `python -m llmbook.pretrain --preset cpu`
    assert model.config == config.model_config()
    data = course_data(config.context_length)
    ppl = evaluate_perplexity(model, data.val_docs, data.eos_id)
    assert ppl == pytest.approx(results["val_perplexity"], rel=1e-4)
    # The shipped run measured 55.89 (the Kneser-Ney 3-gram: 55.30, the 5-gram
    # baseline: 48.92; Chapter 5 discusses the gap). A retrained model that lands
    # above 60 is a regression in the loop, the data or the preset.
    assert ppl < 60.0
    assert results["ngram_baseline_perplexity"] == NGRAM_BASELINE["perplexity"]
    weights = pretrain.WEIGHTS_DIR / "course-gpt" / "model.safetensors"
    assert weights.stat().st_size < 10 * 2**20  # the 10 MB limit


@pytest.mark.parametrize("n_layers,context_length", [(1, 8), (2, 16)])
def test_flops_per_token_matches_torch_flop_counter(n_layers, context_length):
    config = GPTConfig(vocab_size=64, context_length=context_length, d_model=32,
                       n_heads=4, n_layers=n_layers)  # fmt: skip
    model = GPT(config)  # written-out attention: its two bmm's are counted
    batch = torch.randint(0, 64, (3, context_length))
    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).sum().backward()
    per_token = counter.get_total_flops() / batch.numel()
    assert per_token == model_flops_per_token(config)
    assert model_flops_per_token(config, training=False) * 3 == per_token


def test_config_validation():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"d_modle": 3})
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(d_model=30, n_heads=4)
    assert TrainConfig.from_dict(PRESETS["gpu"].to_dict()) == PRESETS["gpu"]


def test_command_line_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "run"
    results = pretrain.main(
        [
            "--preset",
            "tiny",
            "--steps",
            "12",
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert (out / "model.safetensors").exists() and not (out / "checkpoint.pt").exists()
    assert results["train_tokens_seen"] == 12 * PRESETS["tiny"].tokens_per_step
    model = from_pretrained(out)
    data = course_data(PRESETS["tiny"].context_length)
    assert evaluate_perplexity(model, data.val_docs, data.eos_id) == pytest.approx(
        results["val_perplexity"], rel=1e-6
    )
    assert "validation perplexity" in capsys.readouterr().out
