"""llmbook.data.ngram.NGramLM agrees with nltk.lm on small random corpora.

Both models are fed the same padded everygrams (n - 1 start symbols, one end symbol)
and the same vocabulary, so every probability must agree. Tolerance: 1e-12 absolute
on probabilities and 1e-9 relative on perplexities (float64 round-off; the two sum the
same terms in different orders). Corpora are drawn fresh from a seeded generator:
several documents of odd lengths, including a one-token document.
"""

import math
import random

import pytest
from nltk.lm import MLE, KneserNeyInterpolated, Laplace, Lidstone
from nltk.util import everygrams

from llmbook.data.ngram import EOS, UNK, NGramLM, pad

ORDERS = [1, 2, 3, 4]


def random_docs(seed: int, n_docs: int = 7, vocab: str = "abcdefg"):
    rng = random.Random(seed)
    docs = [
        [rng.choice(vocab) for _ in range(rng.randint(3, 17))] for _ in range(n_docs)
    ]
    docs.append([rng.choice(vocab)])  # a one-token document
    return docs


def nltk_model(cls, order, docs, **kwargs):
    lm = (
        cls(order=order, **kwargs)
        if cls is not Lidstone
        else cls(order=order, **kwargs)
    )
    padded = [pad(doc, order) for doc in docs]
    lm.fit([list(everygrams(p, max_len=order)) for p in padded], sum(padded, []))
    return lm


def ours_and_nltk(smoothing, order, docs):
    if smoothing == "mle":
        return NGramLM(order, "mle").fit(docs), nltk_model(MLE, order, docs)
    if smoothing == "laplace":
        return NGramLM(order, "laplace").fit(docs), nltk_model(Laplace, order, docs)
    if smoothing == "add_k":
        theirs = nltk_model(Lidstone, order, docs, gamma=0.3)
        return NGramLM(order, "add_k", k=0.3).fit(docs), theirs
    theirs = nltk_model(KneserNeyInterpolated, order, docs, discount=0.75)
    return NGramLM(order, "kneser_ney", discount=0.75).fit(docs), theirs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("smoothing", ["mle", "laplace", "add_k", "kneser_ney"])
def test_probabilities_and_perplexity_match_nltk(smoothing, order, seed):
    if smoothing == "kneser_ney" and order == 1:
        pytest.skip("Kneser-Ney needs bigrams (nltk divides by zero, we raise)")
    docs = random_docs(seed)
    ours, theirs = ours_and_nltk(smoothing, order, docs)
    assert ours.vocab_size == len(theirs.vocab)
    test_docs = random_docs(100 + seed, n_docs=3)  # held out: unseen n-grams
    grams = ours.ngrams(test_docs)
    for gram in grams:
        expected = theirs.score(gram[-1], gram[:-1])
        assert ours.prob(gram[-1], gram[:-1]) == pytest.approx(expected, abs=1e-12)
    if smoothing != "mle":  # MLE gives held-out n-grams probability 0
        ppl = ours.perplexity(test_docs)
        assert ppl == pytest.approx(theirs.perplexity(grams), rel=1e-9)
        assert math.isfinite(ppl)


@pytest.mark.parametrize("smoothing", ["laplace", "add_k", "kneser_ney"])
@pytest.mark.parametrize("order", ORDERS)
def test_distributions_sum_to_one(smoothing, order):
    if smoothing == "kneser_ney" and order == 1:
        pytest.skip("Kneser-Ney needs order >= 2")
    docs = random_docs(5)
    lm = NGramLM(order, smoothing, k=0.3).fit(docs)
    for context in [(), ("a",), ("b", "c", "a"), ("z", "z", "z")]:
        total = sum(lm.prob(w, context) for w in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_unknown_tokens_and_int_tokens():
    docs = [[1, 2, 3, 2], [2, 3, 1]]
    lm = NGramLM(2, "laplace").fit(docs)
    assert lm.vocab_size == 3 + 3  # 1, 2, 3, <s>, </s>, <UNK>
    assert lm.prob(99, [2]) == lm.prob(UNK, [2]) == pytest.approx(1 / (3 + 6))
    # (<s>, 1) was seen; (1, 3) and (3, </s>) were not
    assert lm.unseen_fraction([[1, 3]]) == pytest.approx(2 / 3)
    kn = NGramLM(2, "kneser_ney").fit(docs)
    assert kn.perplexity([1, 2, 3]) == kn.perplexity([[1, 2, 3]])
    assert kn.perplexity([[99]]) == math.inf  # KN gives an unseen token probability 0


def test_generate_is_deterministic_and_stops_at_end():
    docs = random_docs(3)
    lm = NGramLM(3, "kneser_ney").fit(docs)
    a, b = lm.generate(30, seed=7), lm.generate(30, seed=7)
    assert a == b and len(a) <= 30
    assert EOS not in a and all(t in lm.vocab for t in a)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="order must be"):
        NGramLM(0)
    with pytest.raises(ValueError, match="unknown smoothing"):
        NGramLM(2, "witten_bell")
    with pytest.raises(ValueError, match="kneser_ney needs order >= 2"):
        NGramLM(1, "kneser_ney")
    with pytest.raises(RuntimeError, match="not fitted"):
        NGramLM(2).perplexity([[1]])
    with pytest.raises(ValueError, match="at least one document"):
        NGramLM(2).fit([])


def test_recorded_baseline_is_reproducible():
    from llmbook.data.baselines import NGRAM_BASELINE, ngram_baseline_perplexity

    measured = ngram_baseline_perplexity()
    assert measured == pytest.approx(NGRAM_BASELINE["perplexity"], rel=1e-6), (
        f"the recorded n-gram baseline is stale: recomputed {measured!r}; update "
        "NGRAM_BASELINE in src/llmbook/baselines.py (and the chapters that quote it)"
    )


@pytest.mark.parametrize("order", [2, 3])
def test_with_smoothing_equals_a_fresh_fit(order):
    rng = random.Random(order)
    train = [
        [rng.randrange(12) for _ in range(rng.randrange(1, 30))] for _ in range(40)
    ]
    held = [[rng.randrange(14) for _ in range(rng.randrange(1, 20))] for _ in range(8)]
    base = NGramLM(order, "mle").fit(train)
    for smoothing, kwargs in [("laplace", {}), ("add_k", {"k": 0.3}),
                              ("kneser_ney", {"discount": 0.6}),
                              ("kneser_ney", {"discount": 0.75, "uniform": 16})]:  # fmt: skip
        fresh = NGramLM(order, smoothing, **kwargs).fit(train)
        shared = base.with_smoothing(smoothing, **kwargs)
        assert shared.perplexity(held) == pytest.approx(
            fresh.perplexity(held), rel=1e-12
        )
    with pytest.raises(ValueError, match="unknown smoothing"):
        base.with_smoothing("witten_bell")


def test_uniform_floor_makes_unseen_tokens_finite_and_sums_to_one():
    train = [[1, 2, 3, 1, 2], [2, 3, 1]]
    plain = NGramLM(3, "kneser_ney").fit(train)
    floored = NGramLM(3, "kneser_ney", uniform=10).fit(train)
    assert plain.perplexity([[1, 9]]) == float("inf")  # 9 was never seen
    assert math.isfinite(floored.perplexity([[1, 9]]))
    # over the 10 tokens the floor spreads over (1, 2, 3, </s>, the <s> that nltk's
    # conventions count as a continuation, and five unseen ones, each scored as
    # <UNK>), the distribution after any context sums to 1
    seen = [1, 2, 3, "</s>", "<s>"]
    for context in [(), (1,), (2, 3), (7, 8)]:
        total = sum(floored.prob(w, context) for w in seen)
        total += (10 - len(seen)) * floored.prob(99, context)
        assert total == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="uniform"):
        NGramLM(3, "laplace", uniform=10)
