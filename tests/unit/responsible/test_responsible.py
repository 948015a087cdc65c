"""Chapter 13's package: WEAT, exposure, attributions, logit lens, filters, footprint.

Every mechanism is checked against a direct or brute-force computation, or a library
(scipy's permutation test, Hugging Face GPT-2), on fresh seeded inputs.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmbook.model import GPT, GPTConfig, from_pretrained, model_flops_per_token
from llmbook.responsible import (
    EVASIONS,
    SECRET_PATTERNS,
    UNSAFE_CODE_PATTERNS,
    Hardware,
    PatternFilter,
    canary_rank,
    exposure,
    footprint_from_flops,
    footprint_from_time,
    gradient_x_input,
    integrated_gradients,
    logit_lens,
    logits_from_embeddings,
    normalize,
    random_secrets,
    residual_stream,
    sequence_log_perplexity,
    training_flops,
    weat_effect_size,
    weat_statistic,
    weat_test,
)

# ---------------------------------------------------------------- WEAT


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _s(w, A, B):
    return np.mean([_cos(w, a) for a in A]) - np.mean([_cos(w, b) for b in B])


def _sets(seed, n=8, na=7, nb=9, dim=16):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)), rng.normal(size=(n, dim)),
            rng.normal(size=(na, dim)), rng.normal(size=(nb, dim)))  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weat_statistic_and_effect_size_match_a_direct_computation(seed):
    X, Y, A, B = _sets(seed)
    sx = [_s(x, A, B) for x in X]
    sy = [_s(y, A, B) for y in Y]
    assert weat_statistic(X, Y, A, B) == pytest.approx(sum(sx) - sum(sy), abs=1e-12)
    d = (np.mean(sx) - np.mean(sy)) / np.std(sx + sy, ddof=1)
    assert weat_effect_size(X, Y, A, B) == pytest.approx(d, abs=1e-12)
    result = weat_test(X, Y, A, B, n_permutations=100)
    assert result.effect_size == pytest.approx(d, abs=1e-12)
    assert result.statistic == pytest.approx(sum(sx) - sum(sy), abs=1e-12)


def test_weat_exact_p_value_equals_the_enumerated_distribution():
    X, Y, A, B = _sets(3, n=3, dim=5)
    W = np.concatenate([X, Y])
    observed = weat_statistic(X, Y, A, B)
    stats = []
    for xi in itertools.combinations(range(6), 3):
        yi = [i for i in range(6) if i not in xi]
        stats.append(sum(_s(W[i], A, B) for i in xi) - sum(_s(W[i], A, B) for i in yi))
    assert len(stats) == 20
    expected = np.mean([s >= observed - 1e-12 for s in stats])
    result = weat_test(X, Y, A, B, exact=True)
    assert result.exact and result.n_partitions == 20
    assert result.p_value == pytest.approx(expected, abs=1e-15)
    # the identity partition is among them: p >= 1/20, never 0
    assert result.p_value >= 1 / 20


def test_weat_exact_p_value_matches_scipy_permutation_test():
    from scipy.stats import permutation_test

    X, Y, A, B = _sets(4, n=6)
    sx = np.array([_s(x, A, B) for x in X])
    sy = np.array([_s(y, A, B) for y in Y])
    ref = permutation_test((sx, sy), lambda a, b, axis: a.mean(axis) - b.mean(axis),
                           permutation_type="independent", alternative="greater",
                           n_resamples=np.inf, vectorized=True)  # fmt: skip
    ours = weat_test(X, Y, A, B, exact=True)
    assert ours.n_partitions == math.comb(12, 6)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_weat_sampled_p_value_is_close_to_the_exact_one():
    rng = np.random.default_rng(5)
    X, Y, A, B = _sets(5, n=7)
    X = X + 0.3 * A.mean(axis=0)  # a mild planted association
    exact = weat_test(X, Y, A, B, exact=True).p_value
    sampled = weat_test(
        X, Y, A, B, n_permutations=20_000, seed=int(rng.integers(99)), exact=False
    )
    assert not sampled.exact
    se = math.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    assert abs(sampled.p_value - exact) < 5 * se


def test_weat_planted_association_is_large_and_significant():
    X, Y, A, B = _sets(6, n=10)
    X = X + 2.0 * A.mean(axis=0) / np.linalg.norm(A.mean(axis=0)) * 4
    result = weat_test(X, Y, A, B, n_permutations=5000)
    assert result.effect_size > 1.0 and result.p_value < 0.01
    swapped = weat_test(Y, X, A, B, n_permutations=5000)  # opposite direction
    assert swapped.effect_size == pytest.approx(-result.effect_size)
    assert swapped.p_value > 0.9


def test_weat_bad_inputs():
    X, Y, A, B = _sets(7, n=4)
    with pytest.raises(ValueError, match="same number of words"):
        weat_test(X, Y[:3], A, B)
    with pytest.raises(ValueError, match="embedding dim"):
        weat_test(X, Y, A[:, :5], B)
    with pytest.raises(ValueError, match="all-zero row"):
        weat_test(X, Y, np.zeros_like(A), B)
    with pytest.raises(ValueError, match="at least 2"):
        weat_test(X[:1], Y[:1], A, B)
    with pytest.raises(ValueError, match="NaN"):
        weat_test(X, Y, A, np.full_like(B, np.nan))
    with pytest.raises(ValueError, match="n_permutations"):
        weat_test(X, Y, A, B, n_permutations=0)
    with pytest.raises(ValueError, match="shape"):
        weat_test(X[0], Y, A, B)


# ---------------------------------------------------------------- exposure


@pytest.mark.parametrize("seed", [0, 1])
def test_exposure_matches_a_brute_force_rank(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 50, size=300).astype(float)  # many ties
    for index in rng.choice(300, 20, replace=False):
        order = sorted(range(300), key=lambda i: (scores[i], i != index))
        rank = order.index(index) + 1  # ties broken in the canary's favour
        assert canary_rank(scores, int(index)) == rank
        assert exposure(scores, int(index)) == pytest.approx(
            math.log2(300) - math.log2(rank)
        )


def test_exposure_bounds():
    scores = torch.tensor([3.0, 1.0, 2.0, 5.0])
    assert exposure(scores, 1) == pytest.approx(2.0)  # best of 4: log2 4 bits
    assert exposure(scores, 3) == pytest.approx(0.0)  # worst
    with pytest.raises(IndexError):
        exposure(scores, 4)
    with pytest.raises(ValueError, match="non-empty"):
        exposure(torch.tensor([]), 0)
    with pytest.raises(ValueError, match="NaN"):
        exposure(torch.tensor([1.0, float("nan")]), 0)


@pytest.fixture(scope="module")
def draft():
    return from_pretrained("course-gpt-draft").eval()


def test_sequence_log_perplexity_matches_one_at_a_time_and_hugging_face(draft):
    from llmbook.model import to_hf_gpt2

    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 2048, (n,), generator=gen).tolist() for n in (7, 12, 5, 9)]
    ours = sequence_log_perplexity(draft, seqs, prefix_length=3, batch_size=3)
    hf = to_hf_gpt2(draft)
    for seq, value in zip(seqs, ours, strict=True):
        ids = torch.tensor([seq])
        with torch.no_grad():
            logp = F.log_softmax(draft(ids)[0, :-1].double(), dim=-1)
            direct = -sum(logp[t - 1, seq[t]] for t in range(3, len(seq))) / math.log(2)
            labels = ids.clone()
            labels[0, :3] = -100
            hf_loss = hf(ids, labels=labels).loss.item() * (len(seq) - 3) / math.log(2)
        assert value.item() == pytest.approx(direct.item(), abs=1e-4)
        assert value.item() == pytest.approx(hf_loss, rel=1e-4)


def test_sequence_log_perplexity_and_secrets_bad_inputs(draft):
    with pytest.raises(ValueError, match="prefix_length"):
        sequence_log_perplexity(draft, [[1, 2, 3]], prefix_length=0)
    with pytest.raises(ValueError, match="nothing to score"):
        sequence_log_perplexity(draft, [[1, 2, 3]], prefix_length=3)
    with pytest.raises(ValueError, match="empty"):
        sequence_log_perplexity(draft, [], prefix_length=1)
    secrets = random_secrets(50, 3, seed=0)
    assert len(set(secrets)) == 50 and all(len(s) == 3 and s.isdigit() for s in secrets)
    assert secrets == random_secrets(50, 3, seed=0) != random_secrets(50, 3, seed=1)
    with pytest.raises(ValueError, match="distinct"):
        random_secrets(11, 1)


# ---------------------------------------------------------------- attributions


@pytest.fixture(scope="module")
def gpt():
    return from_pretrained("course-gpt").eval()


def test_logit_lens_last_layer_is_the_models_output(gpt):
    idx = torch.randint(0, 2048, (3, 11), generator=torch.Generator().manual_seed(1))
    lens = logit_lens(gpt, idx)
    assert lens.shape == (5, 3, 11, 2048)
    with torch.no_grad():
        logits = gpt(idx)
        from_embeds = logits_from_embeddings(gpt, gpt.tok_emb(idx))
    torch.testing.assert_close(lens[-1], logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_embeds, logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(lens[0], logits, atol=1e-2)  # earlier layers differ
    with pytest.raises(ValueError):
        logit_lens(gpt, torch.tensor([[5000]]))
    with pytest.raises(TypeError, match="GPT"):
        logit_lens(torch.nn.Linear(2, 2), idx)


def test_residual_stream_attention_is_causal_and_normalised(gpt):
    idx = torch.randint(0, 2048, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        states, attn = residual_stream(gpt, gpt.tok_emb(idx))
    assert len(states) == 5 and len(attn) == 4 and attn[0].shape == (2, 4, 9, 9)
    for w in attn:
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 9))
        assert (w.triu(1) == 0).all()
    with pytest.raises(ValueError, match="tok_embeds"):
        residual_stream(gpt, torch.zeros(1, 3, 7))


def _riemann_loop(f, x, baseline, steps, rule):
    """One gradient at a time, the textbook way."""
    if rule == "trapezoid":
        alphas = [k / steps for k in range(steps + 1)]
        weights = [0.5 / steps] + [1 / steps] * (steps - 1) + [0.5 / steps]
    else:
        shift = {"left": 0.0, "right": 1.0, "midpoint": 0.5}[rule]
        alphas = [(k + shift) / steps for k in range(steps)]
        weights = [1 / steps] * steps
    total = torch.zeros_like(x)
    for a, w in zip(alphas, weights, strict=True):
        point = (baseline + a * (x - baseline)).requires_grad_(True)
        (g,) = torch.autograd.grad(f(point.unsqueeze(0)).sum(), point)
        total += w * g
    return (x - baseline) * total


@pytest.mark.parametrize("rule", ["left", "right", "midpoint", "trapezoid"])
def test_integrated_gradients_equals_a_brute_force_riemann_sum(rule):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 1)).double()  # fmt: skip

    def f(points):
        return net(points).squeeze(-1)

    x, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    ours = integrated_gradients(f, x, b, steps=17, rule=rule, batch_size=5)
    torch.testing.assert_close(
        ours, _riemann_loop(f, x, b, 17, rule), rtol=0, atol=1e-12
    )


def test_integrated_gradients_is_exact_for_a_quadratic_with_the_midpoint_rule():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, dtype=torch.float64, generator=gen)
    x, b = (
        torch.randn(5, generator=gen).double(),
        torch.randn(5, generator=gen).double(),
    )
    ig = integrated_gradients(lambda p: (w * p**2).sum(-1), x, b, steps=3)
    torch.testing.assert_close(ig, w * (x**2 - b**2), rtol=0, atol=1e-12)
    # for a linear function, IG from zero equals gradient x input
    gxi = gradient_x_input(lambda p: (w * p).sum(), x)
    torch.testing.assert_close(integrated_gradients(lambda p: (w * p).sum(-1), x), gxi)
    torch.testing.assert_close(gxi, w * x)


def test_integrated_gradients_completeness_on_the_course_gpt(gpt):
    idx = torch.randint(0, 2048, (1, 10), generator=torch.Generator().manual_seed(4))
    x = gpt.tok_emb(idx).detach()[0]  # (seq, d_model)
    target = int(idx[0, 3])

    def f(points):  # (k, seq, d_model) -> (k,): logit of `target` at the last position
        return logits_from_embeddings(gpt, points)[:, -1, target]

    with torch.no_grad():
        gap = (f(x[None]) - f(torch.zeros_like(x)[None])).item()
    errors = []
    for steps in (4, 16, 64):
        ig = integrated_gradients(f, x, steps=steps, batch_size=32)
        errors.append(abs(ig.sum().item() - gap))
    assert errors[-1] < 0.02 * abs(gap) + 1e-3
    assert errors[-1] < errors[0]  # the Riemann error shrinks with more steps


def test_attribution_bad_inputs():
    x = torch.randn(3)
    with pytest.raises(ValueError, match="rule"):
        integrated_gradients(lambda p: p.sum(-1), x, rule="simpson")
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(lambda p: p.sum(-1), x, steps=0)
    with pytest.raises(ValueError, match="baseline shape"):
        integrated_gradients(lambda p: p.sum(-1), x, torch.zeros(4))
    with pytest.raises(ValueError, match="f must map"):
        integrated_gradients(lambda p: p, x)
    with pytest.raises(ValueError, match="scalar"):
        gradient_x_input(lambda p: p, x)


# ---------------------------------------------------------------- filters


def test_filter_flags_unsafe_code_and_passes_safe_code():
    filt = PatternFilter(UNSAFE_CODE_PATTERNS)
    assert filt.check("os.system('ls')") == ["os.system"]
    assert filt.check("subprocess.run(cmd, shell=True)") == ["shell=True"]
    assert filt.check("x = eval(text)") == ["eval/exec"]
    assert filt.check("shutil.rmtree(path)") == ["rmtree"]
    assert filt.check("rm -rf /tmp/x") == ["rm -rf"]
    for safe in ("literal_eval(text)", "self.evaluate(x)", "os.path.join(a, b)",
                 "subprocess.run(cmd, shell=False)", "obj.exec_module(m)"):  # fmt: skip
        assert filt.check(safe) == [], safe


def test_normalisation_undoes_some_evasions_and_not_others():
    text = "os.system('ls')"
    strict = PatternFilter(UNSAFE_CODE_PATTERNS)
    raw = PatternFilter(UNSAFE_CODE_PATTERNS, normalize_first=False)
    caught = {name: strict.blocks(fn(text)) for name, fn in EVASIONS.items()}
    assert caught == {"upper case": True, "full-width": True, "zero-width": True,
                      "spaced out": False, "homoglyphs": False, "base64": False}  # fmt: skip
    assert raw.blocks(EVASIONS["upper case"](text))  # regexes ignore case anyway
    assert not raw.blocks(EVASIONS["full-width"](text))
    assert not raw.blocks(EVASIONS["zero-width"](text))
    assert normalize("ＡＢ\u200bc  \n d") == "abc d"


def test_output_filter_redacts_secrets():
    filt = PatternFilter(SECRET_PATTERNS)
    out = filt.redact("the secret code of json is 482, mail bob@example.org")
    assert "482" not in out and "bob@" not in out and out.count("[REDACTED]") == 2
    assert filt.check("the code is 4 8 2") == ["announced secret"]
    assert filt.check("version 3.11 of the code") == []


def test_filter_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        PatternFilter({})
    with pytest.raises(ValueError, match="valid regex"):
        PatternFilter({"bad": "("})
    with pytest.raises(TypeError, match="str"):
        PatternFilter(UNSAFE_CODE_PATTERNS).check(b"os.system")
    with pytest.raises(TypeError, match="str"):
        normalize(None)


# ---------------------------------------------------------------- footprint


def test_footprint_arithmetic():
    config = GPTConfig(
        vocab_size=50, context_length=16, d_model=32, n_heads=4, n_layers=2
    )
    assert training_flops(config, 1000) == 1000 * model_flops_per_token(config, True)
    one_kwh = footprint_from_time(3600, 1000, pue=1.0, kg_co2e_per_kwh=0.5)
    assert one_kwh.kwh == pytest.approx(1.0) and one_kwh.kg_co2e == pytest.approx(0.5)
    gpu = Hardware("test", peak_flops=1e15, watts=500, utilization=0.5)
    fp = footprint_from_flops(1.8e18, gpu, pue=1.2, kg_co2e_per_kwh=0.4)
    assert fp.seconds == pytest.approx(3600)
    assert fp.kwh == pytest.approx(0.6) and fp.kg_co2e == pytest.approx(0.24)
    # Kaplan's C = 6 N D, with N the matmul weights counted on a real model (every
    # 2-D parameter but the position table; the tied LM head once), plus attention's
    # two (seq x seq) products, 12 L T d per token, which 6 N D leaves out
    for cfg in (config, from_pretrained("course-gpt").config):
        model = GPT(cfg)
        n = sum(p.numel() for name, p in model.named_parameters()
                if p.dim() == 2 and name != "pos_emb.weight")  # fmt: skip
        attention = 12 * cfg.n_layers * cfg.context_length * cfg.d_model
        assert training_flops(cfg, 1000) == (6 * n + attention) * 1000
    # for the course GPT the attention term adds about a tenth to 6 N D
    assert 1.05 < training_flops(cfg, 1) / (6 * n) < 1.2


def test_footprint_bad_inputs():
    with pytest.raises(ValueError, match="utilization"):
        Hardware("x", 1e12, 100, 1.5)
    with pytest.raises(ValueError, match="pue"):
        footprint_from_time(10, 100, pue=0.9)
    with pytest.raises(ValueError, match="watts"):
        footprint_from_time(10, -1)
    with pytest.raises(TypeError, match="seconds"):
        footprint_from_time("10", 100)
    with pytest.raises(ValueError, match="tokens"):
        training_flops(GPTConfig(), 0)


# ---------------------------------------------------------------- the chapter's inline code


def test_chapter_inline_association_matches_the_package():
    from notebook_defs import notebook_definitions

    from llmbook.responsible import association

    chapter = Path(__file__).resolve().parents[3] / "chapters/13_responsible_ai.ipynb"
    nb = notebook_definitions(chapter, ["s"])
    rng = np.random.default_rng(11)
    W, A, B = (rng.normal(size=(n, 12)) for n in (5, 4, 6))
    unit = [m / np.linalg.norm(m, axis=1, keepdims=True) for m in (W, A, B)]
    np.testing.assert_allclose(nb.s(*unit), association(W, A, B), atol=1e-12)

    # the probe's labels come from the package (the same on every Python)
    from llmbook.responsible.strings import string_spans, window_outside_strings

    src = 'x = "a"\ny = 1  # c\nz = """q\nr"""\nw = f"{x!r}"\n'
    spans = string_spans(src)
    assert [src[a:b] for a, b in spans] == ['"a"', '"""q\nr"""', 'f"{x!r}"']
    assert window_outside_strings(spans, src.index("q"), src) == src.index("w")
