"""llmbook.train (loop, step, checkpoints) and llmbook.pretrain (the command line):
perplexity on the baseline's terms, determinism, resume, the one training step, the
shipped course GPT, FLOP accounting."""

from __future__ import annotations

import copy
import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_gpt
from torch.utils.flop_counter import FlopCounterMode

from llmbook import pretrain
from llmbook.data import NGRAM_BASELINE, course_data, window_iterator
from llmbook.model import (
    GPT,
    GPTConfig,
    from_pretrained,
    model_flops_per_token,
    pretrained_metadata,
    save_pretrained,
)
from llmbook.model.pretrained import WEIGHTS_DIR
from llmbook.train import (
    PRESETS,
    TrainConfig,
    evaluate_perplexity,
    lm_loss,
    lr_at,
    make_optimizer,
    run_steps,
    train,
    train_step,
    update_ema,
)

SIZES = {"vocab_size": 50, "context_length": 8, "d_model": 16, "n_heads": 2,
         "n_layers": 2}  # fmt: skip


def random_docs(generator: torch.Generator, n_docs: int, vocab_size: int = 50):
    lengths = torch.randint(0, 13, (n_docs,), generator=generator).tolist()
    return [
        torch.randint(1, vocab_size, (n,), generator=generator).tolist()
        for n in lengths
    ]


@pytest.mark.parametrize("n_docs", [1, 3, 9])
def test_perplexity_with_stride_one_equals_token_by_token(n_docs):
    gen = torch.Generator().manual_seed(n_docs)
    model = random_gpt(0, config=SIZES)
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
    model = random_gpt(0, config=SIZES, context_length=64)
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
    model = random_gpt(0, config=SIZES).train()
    evaluate_perplexity(model, [[1, 2, 3]], eos_id=0)
    assert model.training
    with pytest.raises(ValueError, match="stride"):
        evaluate_perplexity(model, [[1, 2]], eos_id=0, stride=9)
    with pytest.raises(ValueError, match="empty"):
        evaluate_perplexity(model, [], eos_id=0)


def test_untrained_model_perplexity_is_near_vocab_size():
    data = course_data()
    model = GPT(PRESETS["tiny"].model)
    ppl = evaluate_perplexity(model, data.val_docs[:20], data.eos_id)
    assert 0.8 * 2048 < ppl < 1.25 * 2048
    assert data.val_predictions == 172_566 + len(data.val_docs)  # the stored split


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


def test_course_stream_is_the_documents_with_eos():
    data = course_data()
    eos = data.eos_id
    assert int((data.train_stream == eos).sum()) > 1000  # one EOS per document
    assert data.train_stream[-1] == eos
    assert data.train_tokens == data.train_stream.numel()


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def tiny_config(**changes) -> TrainConfig:
    return PRESETS["tiny"].replace(**changes)


def small_val_data():
    """The course data with the first 16 validation documents only: the tiny runs
    below evaluate three times each, and on the whole split (172,566 tokens) those
    evaluations would take most of their time."""
    data = course_data()
    data.val_docs = data.val_docs[:16]
    return data


def run_tiny(steps=None, ema_decay=0.0, **kwargs):
    """A fresh tiny training run (under a second)."""
    config = tiny_config(ema_decay=ema_decay)
    torch.manual_seed(config.seed)
    model = GPT(config.model)
    history = train(
        model, small_val_data(), config, steps=steps, progress=False, **kwargs
    )
    return model, history


@functools.cache
def cached_run(ema_decay: float = 0.0):
    """One tiny run per setting, shared by the tests of this file (same process)."""
    return run_tiny(ema_decay=ema_decay)


def test_training_is_deterministic_and_learns():
    model_a, hist_a = cached_run()
    model_b, hist_b = run_tiny()  # a second, independent run
    assert state_equal(model_a, model_b)
    assert hist_a.loss == hist_b.loss
    assert len(hist_a.loss) == PRESETS["tiny"].max_steps
    # it learns: every evaluation better than the last, the last about half an
    # untrained model's perplexity on the same documents (0.50 measured; on the whole
    # validation split 0.48)
    data = small_val_data()
    torch.manual_seed(1)
    untrained = evaluate_perplexity(
        GPT(PRESETS["tiny"].model), data.val_docs, data.eos_id
    )
    ppl = hist_a.val_perplexity
    assert ppl == sorted(ppl, reverse=True) and ppl[-1] < 0.55 * untrained, (
        ppl,
        untrained,
    )
    assert hist_a.eval_step == [10, 20, 30]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_equals_uninterrupted(tmp_path, ema_decay):
    ckpt = tmp_path / "ckpt.pt"
    straight, hist_straight = cached_run(ema_decay)
    _, first = run_tiny(steps=10, ema_decay=ema_decay, checkpoint_path=ckpt)
    assert ckpt.exists() and first.step[-1] == 10
    torch.manual_seed(123)  # a different RNG state: resume must restore it
    config = tiny_config(ema_decay=ema_decay)
    model = GPT(config.model)
    resumed = train(model, small_val_data(), config,
                    checkpoint_path=ckpt, resume=True, progress=False)  # fmt: skip
    assert state_equal(model, straight)
    assert resumed.loss == hist_straight.loss
    assert resumed.val_perplexity == hist_straight.val_perplexity
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(model, course_data(), config,
              checkpoint_path=tmp_path / "missing.pt", resume=True, progress=False)  # fmt: skip


def test_train_rejects_a_model_that_is_not_the_configs():
    config = tiny_config()
    model = GPT(config.replace(model={"d_model": 16}).model)
    with pytest.raises(ValueError, match="config.model"):
        train(model, course_data(), config, progress=False)


def test_train_step_equals_a_hand_written_step_and_accumulates():
    torch.manual_seed(0)
    config = tiny_config(model={"dropout": 0.0})
    gen = torch.Generator().manual_seed(7)
    batch = torch.randint(0, 2048, (8, 33), generator=gen)
    a, b, c = GPT(config.model), GPT(config.model), GPT(config.model)
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    # by hand: loss, backward, clip, AdamW step
    opt_a = make_optimizer(a, config)
    for group in opt_a.param_groups:
        group["lr"] = 1e-3
    loss = lm_loss(a, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(a.parameters(), 0.5)
    opt_a.step()
    # the package's step, on the whole batch and on two accumulated halves
    loss_b = train_step(b, make_optimizer(b, config), [batch], lr=1e-3, grad_clip=0.5)
    loss_c = train_step(c, make_optimizer(c, config), [batch[:4], batch[4:]],
                        lr=1e-3, grad_clip=0.5)  # fmt: skip
    assert loss_b.item() == pytest.approx(loss.item(), rel=1e-6)
    assert loss_c.item() == pytest.approx(loss.item(), rel=1e-5)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=0, atol=1e-7)
        torch.testing.assert_close(pc, pa, rtol=0, atol=1e-6)
        assert pb.grad is None  # gradients cleared
    with pytest.raises(ValueError, match="at least one micro-batch"):
        train_step(b, make_optimizer(b, config), [])


def test_one_weight_decay_rule():
    """make_optimizer decays what Chapter 5's param_groups_for_weight_decay decays:
    every matrix and embedding (the position table too), no bias or LayerNorm gain."""
    model = GPT(PRESETS["tiny"].model)
    decayed, plain = make_optimizer(model, PRESETS["tiny"]).param_groups
    assert decayed["weight_decay"] == PRESETS["tiny"].weight_decay
    assert plain["weight_decay"] == 0.0
    ids = {id(p) for p in decayed["params"]}
    assert id(model.pos_emb.weight) in ids and id(model.tok_emb.weight) in ids
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() < 2 for p in plain["params"])


def test_update_ema_follows_the_formula_and_the_run_returns_the_average():
    torch.manual_seed(0)
    average, model = random_gpt(0, config=SIZES), random_gpt(1, config=SIZES)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    update_ema(average, model, decay=0.75)
    for name, value in average.state_dict().items():
        expected = 0.75 * before[name] + 0.25 * model.state_dict()[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    assert average.lm_head.weight is average.tok_emb.weight  # tying kept
    # a run with an average returns it: its weights differ from the last iterate's
    raw, raw_hist = cached_run()
    averaged, hist = cached_run(0.9)
    assert not state_equal(raw, averaged)
    assert hist.loss == raw_hist.loss  # the average does not change training
    with pytest.raises(ValueError, match="ema_decay"):
        tiny_config(ema_decay=1.0)


def test_save_and_load_pretrained_round_trip(tmp_path):
    model = random_gpt(0, config=SIZES)
    save_pretrained(model, tmp_path / "m", {"note": "test"})
    loaded = from_pretrained(tmp_path / "m")
    assert state_equal(model, loaded)
    assert loaded.lm_head.weight is loaded.tok_emb.weight  # tying survives loading
    assert json.loads((tmp_path / "m" / "config.json").read_text())["note"] == "test"
    with pytest.raises(FileNotFoundError, match="shipped models"):
        from_pretrained(tmp_path / "nothing-here")


def test_shipped_course_gpt_beats_the_ngram_and_evaluate_says_so(capsys):
    """`python -m llmbook.pretrain --evaluate course-gpt`: the shipped model's held-out
    perplexity P, recomputed, equals the recorded one, and P <= 0.70 x the
    Kneser-Ney 5-gram's B on the same held-out tokens."""
    results = pretrained_metadata("course-gpt")["results"]
    config = TrainConfig.from_dict(results["train_config"])
    assert config == PRESETS["cpu"]  # made by `python -m llmbook.pretrain --preset cpu`
    assert from_pretrained("course-gpt").config == config.model
    out = pretrain.main(["--evaluate", "course-gpt"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (
        f"course-gpt perplexity {out['perplexity']:.2f}, n-gram baseline "
        f"{out['baseline']:.2f}, {out['tokens']} held-out tokens"
    )
    assert out["perplexity"] == pytest.approx(results["val_perplexity"], rel=1e-4)
    assert out["baseline"] == pytest.approx(NGRAM_BASELINE["perplexity"], rel=1e-9)
    assert out["tokens"] == course_data().val_predictions
    assert out["perplexity"] <= 0.70 * out["baseline"]  # the course's target
    weights = WEIGHTS_DIR / "course-gpt" / "model.safetensors"
    assert weights.stat().st_size < 10 * 2**20


def test_shipped_tokenizer_belongs_to_the_model(tmp_path):
    import shutil

    from llmbook.data import course_tokenizer
    from llmbook.model import load_tokenizer, saved_tokenizer

    tokenizer = load_tokenizer("course-gpt")
    course = course_tokenizer()
    text = "Return the number of items in a container."
    assert tokenizer(text)["input_ids"] == course.encode(text).ids
    assert saved_tokenizer("course-gpt").to_str() == course.to_str()
    assert len(tokenizer) == from_pretrained("course-gpt").config.vocab_size
    # a model directory whose tokenizer was swapped is an error, not garbage
    copy = tmp_path / "swapped"
    shutil.copytree(WEIGHTS_DIR / "course-gpt", copy)
    course_tokenizer(512).save(str(copy / "tokenizer.json"))
    for load in (load_tokenizer, saved_tokenizer):
        with pytest.raises(
            ValueError, match="not the tokenizer this model was trained"
        ):
            load(copy)
    (copy / "tokenizer.json").unlink()
    for load in (load_tokenizer, saved_tokenizer):
        with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
            load(copy)
    with pytest.raises(ValueError, match="do not belong together"):
        save_pretrained(random_gpt(0, config=SIZES), tmp_path / "bad", tokenizer=course)


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
        PRESETS["cpu"].replace(model={"d_model": 30, "n_heads": 4})
    with pytest.raises(TypeError, match="GPTConfig"):
        TrainConfig(model=3)
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
    data = course_data()
    assert evaluate_perplexity(model, data.val_docs, data.eos_id) == pytest.approx(
        results["val_perplexity"], rel=1e-6
    )
    assert "validation perplexity" in capsys.readouterr().out


def test_run_steps_is_a_loop_of_train_step():
    """run_steps from step 2 to 7 with two micro-batches per step and a loss that
    changes with the step equals train_step called by hand; after_step sees every
    step with its loss; the learning rate is lr(step)."""
    torch.manual_seed(0)
    config = tiny_config(model={"dropout": 0.0})
    ours = GPT(config.model)
    theirs = copy.deepcopy(ours)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 2048, (4, 33), generator=gen) for _ in range(12)]

    def lr(step):
        return 1e-3 * (step + 1)

    def loss_at(step):
        return lambda model, batch: lm_loss(model, batch) * (1 + step)

    seen = []
    optimizer = make_optimizer(ours, config)
    losses = run_steps(ours, optimizer, iter(batches), start=2, stop=8, lr=lr,
                       loss_at=loss_at, grad_accum=2, progress=False,
                       after_step=lambda step, loss: seen.append((step, loss)))  # fmt: skip
    by_hand, theirs_opt = [], make_optimizer(theirs, config)
    for i, step in enumerate(range(2, 8)):
        loss = train_step(theirs, theirs_opt, batches[2 * i : 2 * i + 2], lr=lr(step),
                          loss_fn=loss_at(step))  # fmt: skip
        by_hand.append(loss.item())
    assert losses == by_hand and seen == list(zip(range(2, 8), by_hand, strict=True))
    assert state_equal(ours, theirs) and optimizer.param_groups[0]["lr"] == lr(7)
    assert ours.training


def test_aux_loss_and_on_step_hooks_equal_a_hand_written_loop():
    """train(aux_loss=..., on_step=...) is the loop Chapter 10's study wrote by hand:
    lm_loss + the auxiliary term, backward, clipping, AdamW on the schedule."""
    config = tiny_config(model={"dropout": 0.0}, max_steps=6, eval_every=6)
    data = small_val_data()

    def penalty(model):  # any differentiable function of the model's state
        return 1e-3 * model.lm_head.weight.pow(2).sum()

    seen = []
    torch.manual_seed(0)
    ours = GPT(config.model)
    theirs = copy.deepcopy(ours)
    train(ours, data, config, progress=False, aux_loss=penalty,
          on_step=lambda step, model: seen.append((step, model is ours)))  # fmt: skip
    assert seen == [(step, True) for step in range(6)]
    optimizer = make_optimizer(theirs, config)
    batches = window_iterator(data.train_stream, config.model.context_length,
                              config.batch_size, config.seed)  # fmt: skip
    theirs.train()
    for step in range(6):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = lm_loss(theirs, next(batches)) + penalty(theirs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
