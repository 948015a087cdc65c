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
from notebook_defs import notebook_definitions

from llmbook import bpe as B
from llmbook import data as D

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "02_data.ipynb"
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
]


@pytest.fixture(scope="module")
def nb():
    # P and BASE are plain assignments, which notebook_definitions does not run
    return notebook_definitions(
        CHAPTER, NAMES, extra_globals={"P": D._P, "BASE": D._BASE}
    )


@pytest.fixture(scope="module")
def docs():
    return D.course_splits().train[:300]


def test_the_definitions_come_from_the_notebook(nb):
    for name in NAMES:
        assert getattr(nb, name).__module__.startswith("notebook:")


def test_notebook_constants_match_the_package():
    import nbformat

    nb = nbformat.read(CHAPTER, as_version=4)
    lines = {
        line.split("#")[0].strip() for c in nb.cells for line in c.source.split("\n")
    }
    assert "P = (1 << 31) - 1" in lines and D._P == (1 << 31) - 1
    assert "BASE = 1_000_003" in lines and D._BASE == 1_000_003


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
