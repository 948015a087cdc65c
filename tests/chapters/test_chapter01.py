"""Teach, then import: Chapter 1's inline n-gram code agrees with llmbook.data.ngram.

The chapter writes padding, n-gram counting, add-k smoothing and perplexity inline;
``src/llmbook/ngram.py`` holds the package version (with Kneser-Ney and sampling).
Both run on the same random corpora (seeded; several documents of odd lengths, a
one-token document, held-out tokens never seen in training, string and int tokens).

Tolerances: probabilities within 1e-12 absolute, perplexities within 1e-9 relative
(float64; the two sum the same terms in a different order).
"""

import random
from pathlib import Path

import pytest
from notebook_defs import notebook_definitions

import llmbook.data.ngram as pkg

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "01_introduction.ipynb"
NAMES = ["pad", "count_ngrams", "make_vocab", "add_k_prob", "perplexity"]


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(
        CHAPTER, NAMES, extra_globals={"BOS": pkg.BOS, "EOS": pkg.EOS, "UNK": pkg.UNK}
    )


def random_docs(seed, n_docs=6, alphabet=("a", "b", "c", "d", "e")):
    rng = random.Random(seed)
    docs = [
        [rng.choice(alphabet) for _ in range(rng.randint(2, 15))] for _ in range(n_docs)
    ]
    return docs + [[rng.choice(alphabet)]]


def test_the_definitions_come_from_the_notebook(nb):
    for name in NAMES:
        assert getattr(nb, name).__module__ == "notebook:01_introduction", name


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_pad_agrees(nb, order):
    assert nb.pad(["x", "y", "z"], order) == pkg.pad(["x", "y", "z"], order)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [1.0, 0.1])
def test_add_k_probabilities_and_perplexity_agree(nb, seed, order, k):
    train = random_docs(seed)
    held_out = random_docs(50 + seed, n_docs=3, alphabet=("a", "b", "c", "f"))  # f: new
    counts = nb.count_ngrams(train, order)
    vocab = nb.make_vocab(train, order)
    package = pkg.NGramLM(order, "add_k", k=k).fit(train)
    assert vocab == package.vocab
    for gram in package.ngrams(held_out):
        ours = nb.add_k_prob(counts, vocab, gram[-1], gram[:-1], k)
        assert ours == pytest.approx(package.prob(gram[-1], gram[:-1]), abs=1e-12)

    def prob(w, h):
        return nb.add_k_prob(counts, vocab, w, h, k)

    assert nb.perplexity(prob, held_out, order) == pytest.approx(
        package.perplexity(held_out), rel=1e-9
    )


def test_int_tokens_and_unseen_contexts(nb):
    train = [[5, 6, 7, 5], [6, 6]]
    counts, vocab = nb.count_ngrams(train, 3), nb.make_vocab(train, 3)
    package = pkg.NGramLM(3, "laplace").fit(train)
    for word, context in [(5, (6, 7)), (99, (7, 7)), (pkg.EOS, (5, 6))]:
        assert nb.add_k_prob(counts, vocab, word, context) == pytest.approx(
            package.prob(word, context), abs=1e-12
        )


def test_perplexity_is_infinite_for_a_zero_probability(nb):
    assert nb.perplexity(lambda w, h: 0.0, [["a"]], 2) == float("inf")
    assert nb.perplexity(lambda w, h: 0.25, [["a", "b"]], 2) == pytest.approx(4.0)
