"""llmbook.metrics against the reference libraries, on fresh seeded random inputs.

* BLEU and the 13a tokenizer vs sacrebleu 2.x defaults (within 1e-6 on the 0-100
  scale) and vs nltk's corpus_bleu where their conventions agree; chrF vs sacrebleu;
  ROUGE-1/2/L vs rouge-score, with and without stemming (within 1e-12);
* accuracy, precision, recall, F1 (micro, macro, per class) and the confusion matrix
  vs scikit-learn, including labels never predicted (scikit-learn's zero_division);
* Cohen's kappa vs scikit-learn, the exact permutation test vs scipy;
* perplexity / bits per byte, batched sequence scoring, the harness, contamination.

Each test draws its own inputs from a seeded generator, so failures reproduce.
"""

from __future__ import annotations

import math
import random
import string
import warnings

import numpy as np
import pytest
import sacrebleu
import torch
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from scipy import stats
from sklearn import metrics as skm

import llmbook.metrics as M
from llmbook.data.ngram import NGramLM
from llmbook.model import GPT, GPTConfig

BLEU_TOL = 1e-6  # 0-100 scale, as the issue asks; in practice ~1e-13
SEEDS = [0, 1, 2]
WORDS = "the cat sat on a mat . , dog ran ; it's well-known 3.5 1,000 ( ) \" -".split()


def random_sentence(rng: random.Random, max_len: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_len)))


def random_corpus(rng, n_refs=None):
    n = rng.randint(1, 8)
    k = n_refs or rng.randint(1, 4)
    hyps = [random_sentence(rng) for _ in range(n)]
    refs = [[random_sentence(rng) for _ in range(n)] for _ in range(k)]
    return hyps, refs


# --- tokenizer and BLEU ----------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_tokenize_13a_matches_sacrebleu(seed):
    rng = random.Random(seed)
    alphabet = list(string.printable) + ["&quot;", "&amp;", "&lt;", "&gt;", "-\n"]
    alphabet += ["<skipped>", "é", "3.", ".5", "a-"]
    reference = Tokenizer13a()
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        # sacrebleu strips trailing whitespace before tokenising; ours does it inside
        assert M.tokenize_13a(text) == reference(text.rstrip()).split(), repr(text)


@pytest.mark.parametrize("seed", SEEDS)
def test_corpus_bleu_matches_sacrebleu_on_random_corpora(seed):
    rng = random.Random(100 + seed)
    nonzero = 0
    for _ in range(150):
        hyps, refs = random_corpus(rng)
        ours = M.corpus_bleu(hyps, refs)
        theirs = sacrebleu.corpus_bleu(hyps, refs).score
        assert ours == pytest.approx(theirs, abs=BLEU_TOL), (hyps, refs)
        nonzero += theirs > 0
    assert nonzero > 50  # the comparison is not all zeros


@pytest.mark.parametrize("seed", SEEDS)
def test_corpus_bleu_tokenize_option_matches_sacrebleus(seed):
    """tokenize= as sacrebleu's: whitespace ("none") and Chapter 9's Chinese ("zh")."""
    from llmbook.translate import tokenize_zh

    rng = random.Random(200 + seed)
    zh = list("搜索文档的函数。，返回值") + ["Python", "3.5", "(", ")", " "]
    for _ in range(60):
        hyps, refs = random_corpus(rng)
        ours = M.corpus_bleu(hyps, refs, tokenize=str.split)
        theirs = sacrebleu.corpus_bleu(hyps, refs, tokenize="none").score
        assert ours == pytest.approx(theirs, abs=BLEU_TOL), (hyps, refs)
        n = rng.randint(1, 6)
        hyps = [
            "".join(rng.choice(zh) for _ in range(rng.randint(0, 12))) for _ in range(n)
        ]
        refs = [
            [
                "".join(rng.choice(zh) for _ in range(rng.randint(1, 12)))
                for _ in range(n)
            ]
        ]
        ours = M.corpus_bleu(hyps, refs, tokenize=tokenize_zh)
        theirs = sacrebleu.corpus_bleu(hyps, refs, tokenize="zh").score
        assert ours == pytest.approx(theirs, abs=BLEU_TOL), (hyps, refs)


def test_corpus_bleu_edge_cases():
    cases = [
        ([""], [["the cat sat on the mat"]]),  # empty hypothesis
        (["", ""], [["a b c d", "e f"]]),  # every hypothesis empty
        (["", "the cat sat on the mat ."], [["x y", "the cat sat on a mat ."]]),
        (["the cat"], [["the cat sat on the mat"]]),  # short: brevity penalty
        (  # longer than every reference
            ["the cat sat on the mat and then the cat sat on the mat again"],
            [["the cat sat on the mat"], ["a cat sat on a mat"]],
        ),
        (  # several references of different lengths; closest-length tie
            ["one two three four five six"],
            [["one two three four five"], ["one two three four five six seven"]],
        ),
        (["a b c"], [["a b c"]]),  # exact, too short for 4-grams
        (["x y z w v"], [["a b c d e"]]),  # no match at all
        (["the cat sat"], [["the cat sat"], [None]]),  # a missing reference
        (["Hello, world!  "], [["hello , world !"]]),  # case and tokenisation
    ]
    for hyps, refs in cases:
        ours = M.corpus_bleu(hyps, refs)
        theirs = sacrebleu.corpus_bleu(hyps, refs).score
        assert ours == pytest.approx(theirs, abs=BLEU_TOL), (hyps, refs, ours, theirs)
    assert M.corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == (
        pytest.approx(100.0)
    )


def test_corpus_bleu_is_not_the_mean_of_sentence_bleu():
    hyps = ["the cat sat on the mat", "dog"]
    refs = [["the cat sat on the mat", "a dog ran away"]]
    corpus = M.corpus_bleu(hyps, refs)
    mean = np.mean(
        [M.sentence_bleu(h, [r]) for h, r in zip(hyps, refs[0], strict=True)]
    )
    assert abs(corpus - mean) > 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_sentence_bleu_matches_sacrebleu(seed):
    rng = random.Random(200 + seed)
    for _ in range(200):
        hyp = random_sentence(rng)
        refs = [random_sentence(rng) for _ in range(rng.randint(1, 3))]
        theirs = sacrebleu.sentence_bleu(hyp, refs).score
        assert M.sentence_bleu(hyp, refs) == pytest.approx(theirs, abs=BLEU_TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_corpus_bleu_matches_nltk(seed):
    """nltk scores token lists; with plain words 13a changes nothing. Its smoothing
    functions differ from sacrebleu's (method3 reads the denominator of a reduced
    Fraction), so we compare where every order has a match and no smoothing acts;
    and nltk counts at least one n-gram per segment and order (max(1, total)), so
    hypotheses are at least 4 words long. nltk returns a fraction, not a percentage."""
    rng = random.Random(300 + seed)
    vocab = "a b c d".split()
    compared = 0
    for _ in range(200):
        n, k = rng.randint(1, 5), rng.randint(1, 3)
        tok_hyps = [
            [rng.choice(vocab) for _ in range(rng.randint(4, 12))] for _ in range(n)
        ]
        tok_refs = [
            [[rng.choice(vocab) for _ in range(rng.randint(1, 12))] for _ in range(k)]
            for _ in range(n)
        ]
        hyps = [" ".join(h) for h in tok_hyps]
        refs = [[" ".join(r[j]) for r in tok_refs] for j in range(k)]
        ours = M.corpus_bleu(hyps, refs)
        per_segment = [
            M.bleu_stats(h, [r[i] for r in refs]) for i, h in enumerate(hyps)
        ]
        if not all(sum(per_segment[1:], per_segment[0]).matches):
            continue
        theirs = nltk_corpus_bleu(tok_refs, tok_hyps)
        assert ours == pytest.approx(100 * theirs, abs=BLEU_TOL), (hyps, refs)
        compared += 1
    assert compared > 40


def test_bleu_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 segments but there are 1"):
        M.corpus_bleu(["a b"], [["a b", "c d"]])
    with pytest.raises(ValueError, match="list of reference streams"):
        M.corpus_bleu(["a b"], ["a b"])
    with pytest.raises(ValueError, match="at least one hypothesis"):
        M.corpus_bleu([], [[]])
    with pytest.raises(ValueError, match="list of strings"):
        M.sentence_bleu("a b", "a b")


def test_clipping_and_brevity_by_hand():
    stats = M.bleu_stats("the the the the", ["the cat"])
    assert stats.matches[0] == 1 and stats.totals[0] == 4  # clipped to 1
    assert stats.ref_len == 2 and stats.hyp_len == 4
    stats = M.bleu_stats("a b", ["a b c d e", "a b c"])
    assert stats.ref_len == 3  # the closest reference, not the shortest or longest


# --- chrF and ROUGE ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_chrf_matches_sacrebleu(seed):
    rng = random.Random(400 + seed)
    for _ in range(60):
        hyps, refs = random_corpus(rng)
        theirs = sacrebleu.corpus_chrf(hyps, refs).score
        assert M.corpus_chrf(hyps, refs) == pytest.approx(theirs, abs=1e-9)
        refs0 = [r[0] for r in refs]
        theirs = sacrebleu.sentence_chrf(hyps[0], refs0).score
        assert M.sentence_chrf(hyps[0], refs0) == pytest.approx(theirs, abs=1e-9)
    for hyps, refs in [([""], [["abc"]]), (["abc"], [[""]]), (["a"], [["a"]])]:
        theirs = sacrebleu.corpus_chrf(hyps, refs).score
        assert M.corpus_chrf(hyps, refs) == pytest.approx(theirs, abs=1e-9)


@pytest.mark.parametrize("stem", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_rouge_matches_rouge_score(seed, stem):
    rng = random.Random(500 + seed)
    vocab = WORDS + ["running", "runs", "Cats", "THE", "ratios", "généralement"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stem)
    for _ in range(100):
        target = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 15)))
        pred = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 15)))
        ours, theirs = M.rouge(target, pred, stem=stem), scorer.score(target, pred)
        for key in ("rouge1", "rouge2", "rougeL"):
            np.testing.assert_allclose(tuple(ours[key]), tuple(theirs[key]), atol=1e-12)


def test_lcs_length_by_hand():
    assert M.lcs_length("ABCBDAB", "BDCABA") == 4
    assert M.lcs_length([], [1, 2]) == 0


# --- classification ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(600 + seed)
    for trial in range(40):
        n, k = int(rng.integers(2, 60)), int(rng.integers(2, 7))
        y_true = rng.integers(0, k, n)
        high = k - 1 if trial % 2 else k  # every other trial: a class never predicted
        y_pred = rng.integers(0, high, n)
        y_true[0], y_pred[1] = 0, 1  # at least two labels (sklearn warns otherwise)
        assert M.accuracy(y_true, y_pred) == skm.accuracy_score(y_true, y_pred)
        np.testing.assert_array_equal(
            M.confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred)
        )
        for average in ("macro", "micro", None):
            ours = M.precision_recall_f1(y_true, y_pred, average)
            for zero_division in ("warn", 0):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs = skm.precision_recall_fscore_support(
                        y_true, y_pred, average=average, zero_division=zero_division
                    )[:3]
                for a, b in zip(ours, theirs, strict=True):
                    np.testing.assert_allclose(a, b, atol=1e-12)
        assert M.f1_score(y_true, y_pred) == pytest.approx(
            skm.f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12
        )


def test_class_never_predicted_and_string_labels():
    y_true = ["cat", "dog", "bird", "dog", "cat", "bird"]
    y_pred = ["cat", "dog", "dog", "dog", "cat", "dog"]  # "bird" never predicted
    p, r, f = M.precision_recall_f1(y_true, y_pred, None)
    assert list(p) == [0.0, 1.0, 0.5] and list(r) == [0.0, 1.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.f1_score(y_true, y_pred, average="macro")
    assert M.f1_score(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    labels = ["dog", "cat", "fish"]  # explicit labels, one absent from both
    np.testing.assert_array_equal(
        M.confusion_matrix(y_true, y_pred, labels),
        skm.confusion_matrix(y_true, y_pred, labels=labels),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average="macro", zero_division=0
        )[:3]
    ours = M.precision_recall_f1(y_true, y_pred, "macro", labels=labels)
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_classification_errors_name_the_problem():
    with pytest.raises(ValueError, match="same length: got 3 and 2"):
        M.accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="average must be"):
        M.precision_recall_f1([1], [1], average="weighted")


# --- statistics --------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
@pytest.mark.parametrize("seed", SEEDS)
def test_cohen_kappa_matches_sklearn(seed, weights):
    rng = np.random.default_rng(700 + seed)
    for _ in range(30):
        n = int(rng.integers(5, 80))
        a = rng.integers(0, 5, n)
        b = np.where(rng.random(n) < rng.random(), a, rng.integers(0, 5, n))
        expected = skm.cohen_kappa_score(a, b, weights=weights)
        assert M.cohen_kappa(a, b, weights) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_exact_permutation_test_matches_scipy(seed):
    rng = np.random.default_rng(800 + seed)
    for _ in range(10):
        n = int(rng.integers(2, 13))
        a = rng.integers(0, 2, n).astype(float)  # 0/1 correctness: many ties
        b = rng.integers(0, 2, n).astype(float) if rng.random() < 0.5 else rng.random(n)
        expected = stats.permutation_test(
            (a, b),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            n_resamples=np.inf,
            vectorized=True,
        ).pvalue
        assert M.permutation_test(a, b) == pytest.approx(expected, abs=1e-12)


def test_monte_carlo_permutation_and_paired_bootstrap():
    rng = np.random.default_rng(900)
    a = (rng.random(400) < 0.70).astype(float)
    b = (rng.random(400) < 0.55).astype(float)
    assert M.permutation_test(a, b) < 0.01
    result = M.paired_bootstrap(a, b)
    assert result.low < result.difference < result.high and result.low > 0
    assert result.p_value < 0.01
    same = (rng.random(400) < 0.6).astype(float)
    assert M.permutation_test(same, rng.permutation(same)) > 0.2


def test_bootstrap_ci_agrees_with_the_normal_interval():
    rng = np.random.default_rng(901)
    values = rng.normal(3.0, 2.0, 2000)
    estimate, low, high = M.bootstrap_ci(values, n_resamples=4000)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert estimate == pytest.approx(values.mean())
    assert high - low == pytest.approx(2 * half, rel=0.1)
    assert low < estimate < high
    # a corpus statistic over per-example rows (ratio of sums)
    rows = np.stack([rng.integers(0, 5, 300), rng.integers(5, 10, 300)], axis=1)
    est, lo, hi = M.bootstrap_ci(rows, lambda r: r[:, 0].sum() / r[:, 1].sum(), 500)
    assert lo < est < hi


def test_examples_needed():
    assert M.examples_needed(0.5, 0.6) == 388  # the textbook two-proportion n
    assert M.examples_needed(0.5, 0.55) > 4 * M.examples_needed(0.5, 0.6) * 0.9
    with pytest.raises(ValueError, match="equal"):
        M.examples_needed(0.5, 0.5)


# --- language modelling ------------------------------------------------------------


def test_perplexity_and_bits_per_byte_identities():
    assert M.perplexity(10 * math.log(7), 10) == pytest.approx(7.0)
    assert M.bits_per_byte(8 * math.log(2), 8) == pytest.approx(1.0)
    score = M.LMScore(nll=300.0, tokens=100, words=60, bytes=400)
    assert score.word_perplexity == pytest.approx(math.exp(5.0))
    assert score.bits_per_byte == pytest.approx(300 / 400 / math.log(2))
    assert M.text_counts(["ab c", "é"]) == {"words": 5, "bytes": 8}
    with pytest.raises(ValueError, match="positive"):
        M.perplexity(1.0, 0)


def test_score_sequences_matches_a_plain_forward_pass():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context_length=8, d_model=16, n_heads=2))
    model.eval()
    seqs = [torch.randint(0, 40, (n,)).tolist() for n in (2, 5, 9, 9, 30)]
    starts = [1, 3, 1, 6, 4]
    got, count = M.score_sequences(model, seqs, starts, 8, batch_size=2, device="cpu")
    again, _ = M.score_sequences(model, seqs, starts, 8, batch_size=64, device="cpu")
    np.testing.assert_allclose(got, again, atol=1e-4)  # batching does not matter
    for i, (seq, start) in enumerate(zip(seqs, starts, strict=True)):
        assert count[i] == len(seq) - start
        if len(seq) - 1 > 8:  # long: check the windows by hand below
            continue
        ids = torch.tensor(seq)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids[None, :-1]), -1)[0]
        expected = logp[torch.arange(len(seq) - 1), ids[1:]][start - 1 :].sum()
        assert got[i] == pytest.approx(expected.item(), abs=1e-4)
    seq, total = torch.tensor(seqs[4]), 0.0
    for lo, first, hi in M.sliding_windows(30, 4, 8):
        assert hi - 1 - lo <= 8 and (first == 4 or first - lo >= 4)
        with torch.no_grad():
            logp = torch.log_softmax(model(seq[None, lo : hi - 1]), -1)[0]
        total += logp[torch.arange(hi - 1 - lo), seq[lo + 1 : hi]][
            first - lo - 1 :
        ].sum()
    assert got[4] == pytest.approx(float(total), abs=1e-4)


def test_sliding_windows_cover_each_position_once():
    for length, start, context in [(10, 1, 4), (3, 1, 4), (100, 37, 16), (17, 16, 16)]:
        covered = [p for _, first, hi in M.sliding_windows(length, start, context)
                   for p in range(first, hi)]  # fmt: skip
        assert covered == list(range(start, length))


# --- harness and contamination -----------------------------------------------------


class TableScorer:
    """Log-likelihoods looked up in a table: a model whose answers we choose."""

    def __init__(self, table):
        self.table = table

    def loglikelihood(self, contexts, continuations):
        return np.array([self.table[c] for c in continuations])


def test_multiple_choice_sum_versus_length_normalised():
    items = [M.MCItem("q", ("short", "a much longer answer"), answer=1)]
    # the long answer costs more in total but less per byte
    scorer = TableScorer({"short": -5.0, "a much longer answer": -8.0})
    result = M.evaluate_multiple_choice(scorer, items)
    assert result["acc"].tolist() == [0.0] and result["acc_norm"].tolist() == [1.0]


def test_ngram_and_causal_lm_scorers_agree_with_their_models():
    docs = [list("abcabcabd"), list("abcd")]
    lm = NGramLM(3, "kneser_ney", uniform=10).fit(docs)
    scorer = M.NGramScorer(lm, list)
    got = scorer.loglikelihood(["ab"], ["cd"])[0]
    expected = lm.logprob("c", ["a", "b"]) + lm.logprob("d", ["b", "c"])
    assert got == pytest.approx(expected)
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=300, context_length=16, d_model=16, n_heads=2))

    class ByteTokenizer:
        def encode(self, text, add_special_tokens=False):
            return list(text.encode())

    scorer = M.CausalLMScorer(model, ByteTokenizer(), 16, eos_id=299, device="cpu")
    got = scorer.loglikelihood(["hi"], [" there"])[0]
    ids = [299, *b"hi there"]
    expected, _ = M.score_sequences(model, [ids], [3], 16, device="cpu")
    assert got == pytest.approx(expected[0])


def test_tasks_are_well_formed():
    docs = [f"Line {i} of a doc.\nThe second line of document {i}." for i in range(30)]
    items = M.next_line_task(docs, n_items=10, n_choices=4)
    assert len(items) == 10
    for item in items:
        assert len(set(item.choices)) == 4
        assert item.choices[item.answer] in "\n" + docs[item.source]
    source = 'def f(x):\n    """Return x twice over."""\n    return 2 * x\n' * 1
    source += 'def g():\n    """Say hello to the world."""\n'
    more = [
        source.replace("f(", f"f{i}(").replace("twice", f"{i} times") for i in range(5)
    ]
    items = M.docstring_task(more, n_items=5, n_choices=3)
    assert all(item.context.endswith('"""') for item in items)


def test_contamination_overlap():
    index = M.NGramIndex(["The quick brown fox jumps over the lazy dog today."], n=4)
    assert index.overlap("the QUICK brown fox jumps over") == 1.0
    assert index.overlap("completely different words go here now") == 0.0
    assert 0 < index.overlap("the quick brown fox sleeps soundly at home") < 1
    assert index.overlap("too short") == 0.0


@pytest.mark.parametrize("n", [3, 5, 12])
def test_paired_t_interval_agrees_with_scipy(n):
    from scipy import stats

    rng = np.random.default_rng(902 + n)
    a = rng.normal(200.0, 20.0, n)
    b = a + rng.normal(5.0, 4.0, n)  # B about 5 higher, paired by seed
    result = M.paired_t_interval(a, b)
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(0.95)
    assert result.difference == pytest.approx(float(np.mean(a - b)), rel=1e-12)
    assert (result.low, result.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert result.p_value == pytest.approx(test.pvalue, rel=1e-9)
    # three seeds widen the interval by t(2) = 4.30 standard errors, not 1.96
    if n == 3:
        se = np.std(a - b, ddof=1) / math.sqrt(3)
        assert result.high - result.difference == pytest.approx(4.3027 * se, rel=1e-4)


def test_paired_t_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="at least two pairs"):
        M.paired_t_interval([1.0], [2.0])
    with pytest.raises(ValueError, match="same length"):
        M.paired_t_interval([1.0, 2.0], [2.0])
    with pytest.raises(ValueError, match="confidence"):
        M.paired_t_interval([1.0, 2.0], [2.0, 3.0], confidence=1.5)
