"""Teach, then import: Chapter 8's inline metrics agree with llmbook.metrics.

The chapter writes the confusion matrix, precision/recall/F1, the 13a tokenizer,
BLEU's statistics and score, and Cohen's kappa inline; ``src/llmbook/metrics/``
holds the package copy (which tests/unit/metrics/test_metrics.py checks against scikit-learn,
sacrebleu and nltk). Here every inline definition takes the same parameters as the
package's and returns the same values on fresh seeded random inputs (exactly for
counts and tokens, within 1e-12 for scores).
"""

import random
import string
from pathlib import Path

import numpy as np
import pytest
from notebook_defs import assert_same_signature, notebook_definitions

import llmbook.metrics as pkg

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "08_evaluation.ipynb"
NAMES = [
    "confusion_matrix",
    "precision_recall_f1",
    "tokenize_13a",
    "ngram_counts",
    "BLEUStats",
    "bleu_stats",
    "bleu_from_stats",
    "corpus_bleu",
    "cohen_kappa",
]
WORDS = "the cat sat on a mat . , dog ran ; it's 3.5 1,000 ( ) well-known".split()


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(CHAPTER, NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_the_package(nb, name):
    assert_same_signature(getattr(nb, name), getattr(pkg, name))


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_agrees(nb, seed):
    rng = np.random.default_rng(seed)
    for trial in range(50):
        n, k = int(rng.integers(1, 40)), int(rng.integers(2, 6))
        y_true = rng.integers(0, k, n)
        y_pred = rng.integers(0, k - 1 if trial % 2 else k, n)
        labels = list(range(k + 1)) if trial % 3 == 0 else None
        np.testing.assert_array_equal(
            nb.confusion_matrix(y_true, y_pred, labels),
            pkg.confusion_matrix(y_true, y_pred, labels),
        )
        for average in ("macro", "micro", None):
            ours = nb.precision_recall_f1(y_true, y_pred, average, labels)
            theirs = pkg.precision_recall_f1(y_true, y_pred, average, labels)
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="same length"):
        nb.confusion_matrix([1, 2], [1])


@pytest.mark.parametrize("seed", [0, 1])
def test_tokenizer_and_bleu_agree(nb, seed):
    rng = random.Random(seed)
    for _ in range(500):
        text = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 30)))
        assert nb.tokenize_13a(text) == pkg.tokenize_13a(text), repr(text)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))

    for _ in range(100):
        n, k = rng.randint(1, 5), rng.randint(1, 3)
        hyps = [sentence() for _ in range(n)]
        refs = [[sentence() for _ in range(n)] for _ in range(k)]
        assert nb.corpus_bleu(hyps, refs) == pytest.approx(
            pkg.corpus_bleu(hyps, refs), abs=1e-12
        )
        ours = nb.bleu_stats(hyps[0], [r[0] for r in refs])
        theirs = pkg.bleu_stats(hyps[0], [r[0] for r in refs])
        assert vars(ours) == vars(theirs)
        for effective in (False, True):
            assert nb.bleu_from_stats(ours, effective) == pytest.approx(
                pkg.bleu_from_stats(theirs, effective), abs=1e-12
            )
        tokens = sentence().split()
        assert nb.ngram_counts(tokens, 3) == pkg.ngram_counts(tokens, 3)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_agrees(nb, weights):
    rng = np.random.default_rng(7)
    for _ in range(30):
        a = rng.integers(1, 6, 50)
        b = np.where(rng.random(50) < 0.6, a, rng.integers(1, 6, 50))
        assert nb.cohen_kappa(a, b, weights) == pytest.approx(
            pkg.cohen_kappa(a, b, weights), abs=1e-12
        )
