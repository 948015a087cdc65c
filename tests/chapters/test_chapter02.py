"""Teach, then import: Chapter 2's inline data code agrees with llmbook.data/bpe.

The chapter writes deduplication, MinHash, the hash-based split, the BPE merge loop
(recounting every pair after every merge), BPE encoding/decoding and block packing
inline; ``src/llmbook/data.py`` and ``src/llmbook/bpe.py`` hold the package copies
(the package's BPE updates pair counts incrementally). All comparisons are exact:
these are integer and string computations.
"""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from notebook_defs import assert_same_signature, notebook_definitions

import llmbook.data as D
import llmbook.data.cleaning as C
from llmbook.data import bpe as B

CHAPTER = Path(__file__).resolve().parents[2] / "chapters" / "02_data.ipynb"
NAMES = [
    "dedup_key",
    "deduplicate",
    "shingle_hashes",
    "minhash_signatures",
    "unit_hash",
    "split_documents",
    "pretokenize",
    "train_bpe",
    "encode",
    "decode",
    "pack_blocks",
    "window_iterator",
]


@pytest.fixture(scope="module")
def nb():
    # P and BASE are plain assignments, which notebook_definitions does not run
    return notebook_definitions(
        CHAPTER, NAMES, extra_globals={"P": C._P, "BASE": C._BASE}
    )


@pytest.fixture(scope="module")
def docs():
    return D.course_splits().train[:300]


def test_the_definitions_come_from_the_notebook(nb):
    for name in NAMES:
        assert getattr(nb, name).__module__.startswith("notebook:")


@pytest.mark.parametrize(
    ("name", "package"),
    [("dedup_key", D), ("deduplicate", D), ("minhash_signatures", D),
     ("split_documents", D), ("pack_blocks", D), ("window_iterator", D)],
)  # fmt: skip
def test_signatures_match_the_package(nb, name, package):
    # BPE is the exception, on purpose: the chapter writes the naive algorithm
    # (recount every pair after each merge), the package the incremental one with
    # a tokenizer class; test_bpe_training_encoding_decoding_agree checks that both
    # learn the same merges and give the same ids.
    assert_same_signature(getattr(nb, name), getattr(package, name))


def test_notebook_constants_match_the_package():
    import nbformat

    nb = nbformat.read(CHAPTER, as_version=4)
    lines = {
        line.split("#")[0].strip() for c in nb.cells for line in c.source.split("\n")
    }
    assert "P = (1 << 31) - 1" in lines and C._P == (1 << 31) - 1
    assert "BASE = 1_000_003" in lines and C._BASE == 1_000_003


def test_deduplicate_agrees(nb, docs):
    rng = random.Random(0)
    noisy = docs + [d.upper() for d in rng.sample(docs, 20)] + ["", "  "]
    rng.shuffle(noisy)
    assert nb.deduplicate(noisy) == D.deduplicate(noisy)
    assert all(nb.dedup_key(d) == D.dedup_key(d) for d in docs[:50])


def test_minhash_agrees(nb, docs):
    sample = docs[:100] + ["", "abc", "naïve 日本語 🙂 text"]
    for seed in (0, 3):
        assert np.array_equal(
            nb.minhash_signatures(sample, 32, 5, seed),
            D.minhash_signatures(sample, 32, 5, seed),
        )


def test_split_agrees(nb, docs):
    for seed in (0, 1):
        for fractions in ((0.8, 0.1, 0.1), (0.5, 0.25, 0.25)):
            ours = nb.split_documents(docs, fractions, seed)
            theirs = D.split_documents(docs, fractions, seed)
            assert (ours.train, ours.val, ours.test) == (
                theirs.train,
                theirs.val,
                theirs.test,
            )


def test_pretokenize_agrees(nb, docs):
    for doc in docs[:100] + ["It's 2024:  tokens,\n\n naïve! 🙂"]:
        assert nb.pretokenize(doc) == B.pretokenize(doc)


def test_bpe_training_encoding_decoding_agree(nb, docs):
    merges, vocab = nb.train_bpe(docs, 256 + 60)
    assert (merges, vocab) == B.train_bpe(docs, 256 + 60)
    tok = B.BPETokenizer(merges, vocab)
    for text in D.course_splits().val[:30] + ["naïve 日本語 🙂", ""]:
        ids = nb.encode(text, merges)
        assert ids == tok.encode(text)
        assert nb.decode(ids, vocab) == tok.decode(ids) == text


def test_pack_blocks_agrees(nb):
    gen = torch.Generator().manual_seed(0)
    lists = [
        torch.randint(1, 100, (int(n),), generator=gen).tolist()
        for n in torch.randint(0, 20, (13,), generator=gen)
    ]
    for context_length in (1, 3, 7, 16):
        assert torch.equal(
            nb.pack_blocks(lists, context_length, 0),
            D.pack_blocks(lists, context_length, 0),
        )


def test_window_iterator_agrees(nb):
    """Same batches, same signature, same errors as llmbook.data.window_iterator."""
    assert_same_signature(nb.window_iterator, D.window_iterator)
    gen = torch.Generator().manual_seed(1)
    stream = torch.randint(0, 50, (257,), generator=gen)
    for context_length, batch_size, seed, start in [(8, 4, 0, 0), (31, 3, 5, 7)]:
        ours = nb.window_iterator(stream, context_length, batch_size, seed, start)
        theirs = D.window_iterator(stream, context_length, batch_size, seed, start)
        for _ in range(5):
            assert torch.equal(next(ours), next(theirs))
    for bad in (torch.arange(5), torch.zeros(2, 40, dtype=torch.long)):
        with pytest.raises(ValueError) as a:
            next(nb.window_iterator(bad, 8, 2))
        with pytest.raises(ValueError) as b:
            next(D.window_iterator(bad, 8, 2))
        assert str(a.value) == str(b.value)
