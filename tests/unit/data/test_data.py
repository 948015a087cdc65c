"""llmbook.data: cleaning, deduplication, MinHash, splits, tokenizer, packing.

MinHash is checked against exact Jaccard similarity: with 256 permutations the
estimate's standard error is at most 0.5 / 16 = 0.031, so every estimate must be
within 0.15 (about 5 standard errors) of the exact value.
"""

import json
import random

import pytest
import torch
from tokenizers import Tokenizer

import llmbook.data as D
from llmbook.data import tokenization


def test_clean_text_strips_markup_and_normalises():
    raw = (
        "Use :func:`os.path.join` and :class:`~collections.OrderedDict`, see "
        ":ref:`the guide <guide-target>`.\n\n\n``x = 1`` is <b>bold</b> &amp; "
        "<a href='u'>linked</a>;  keep <filename>.\nＦｕｌｌ\u00a0width ﬁ\t tab  \n"
        "Title\n=====\n**strong** and *args"
    )
    assert D.clean_text(raw) == (
        "Use os.path.join and collections.OrderedDict, see the guide.\n\n"
        "x = 1 is bold & linked; keep <filename>.\nFull width fi tab\nTitle\n"
        "strong and *args"
    )


def test_clean_text_nfc_composes_and_drops_controls():
    assert D.clean_text("cafe\u0301\x00\u200b", form="NFC") == "caf\u00e9"
    assert D.clean_text("  \n\n <br/> \n") == ""
    with pytest.raises(TypeError, match="expects a str"):
        D.clean_text(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normal form"):
        D.clean_text("x", form="NFX")


def test_clean_text_is_idempotent_on_the_corpus():
    from llmbook.data.corpus import load_corpus

    for doc in load_corpus("docstrings", max_docs=200):
        once = D.clean_text(doc)
        assert D.clean_text(once) == once


def test_deduplicate_is_exact_up_to_case_and_whitespace():
    docs = ["Hello  world", "hello world", "Hello\nWorld", "Hello, world", "", "  "]
    assert D.deduplicate(docs) == ["Hello  world", "Hello, world"]
    assert D.dedup_key("a  b") == D.dedup_key("A\tb")


def _mutate(text, rng, rate):
    words = text.split()
    return " ".join(w if rng.random() > rate else rng.choice(words) for w in words)


def test_minhash_estimates_exact_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(vocab) for _ in range(120)) for _ in range(6)]
    docs = base + [_mutate(d, rng, r) for d in base for r in (0.05, 0.2, 0.5)]
    sigs = D.minhash_signatures(docs, num_perm=256, ngram=5, seed=1)
    assert sigs.shape == (len(docs), 256)
    errors = []
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            estimate = (sigs[i] == sigs[j]).mean()
            errors.append(abs(estimate - D.jaccard(docs[i], docs[j], 5)))
    assert max(errors) < 0.15
    assert sum(errors) / len(errors) < 0.03


def test_near_duplicates_finds_the_planted_pairs():
    rng = random.Random(1)
    vocab = [f"token{i}" for i in range(500)]
    docs = [" ".join(rng.choice(vocab) for _ in range(80)) for _ in range(30)]
    docs.append(docs[3].replace("token", "Token", 1))  # 30: near copy of 3
    docs.append(docs[7] + " tail")  # 31: near copy of 7
    pairs = D.near_duplicates(docs, threshold=0.8)
    assert [(i, j) for i, j, _ in pairs] == [(3, 30), (7, 31)]
    for i, j, est in pairs:
        assert abs(est - D.jaccard(docs[i], docs[j])) < 0.2
    assert D.near_duplicates(docs) == pairs  # deterministic
    kept = D.remove_near_duplicates(docs)
    assert kept == docs[:30]


def test_near_duplicates_validates_arguments():
    with pytest.raises(ValueError, match="threshold"):
        D.near_duplicates(["a"], threshold=1.5)
    with pytest.raises(ValueError, match="divisible"):
        D.near_duplicates(["a"], num_perm=10, bands=3)


def test_split_documents_is_stable_and_leak_free():
    docs = [f"document number {i}" for i in range(2000)]
    s = D.split_documents(docs, seed=0)
    assert sum(s.sizes().values()) == 2000
    assert not (set(s.train) & set(s.val) or set(s.train) & set(s.test))
    assert not set(s.val) & set(s.test)
    assert abs(len(s.train) / 2000 - 0.8) < 0.03
    # adding documents never moves existing ones; duplicates share a split
    more = D.split_documents(docs + [f"new {i}" for i in range(500)] + docs[:50])
    assert [d for d in more.train if d in set(docs)] == s.train + [
        d for d in docs[:50] if d in set(s.train)
    ]
    assert set(more.val) & set(docs) == set(s.val)
    assert D.split_documents(docs, seed=1).train != s.train
    with pytest.raises(ValueError, match="sum to 1"):
        D.split_documents(docs, fractions=(0.5, 0.1, 0.1))


def test_course_splits_are_fixed_and_disjoint():
    from llmbook.data.corpus import load_corpus

    s = D.course_splits()  # the "python" corpus, stored in the snapshot
    assert s.sizes() == {"train": 1606, "val": 202, "test": 204}
    # the docstrings alone, split at run time by the same pipeline
    docs = D.remove_near_duplicates(
        D.deduplicate(D.clean_text(d) for d in load_corpus("docstrings"))
    )
    assert D.split_documents(docs) == D.course_splits("docstrings")
    assert 0.75 < len(D.course_splits("docstrings").train) / len(docs) < 0.85
    assert not set(s.train) & (set(s.val) | set(s.test))
    n_train = len(s.train)
    s.train.clear()  # callers get fresh lists
    assert len(D.course_splits().train) == n_train


def test_clean_code_keeps_indentation_and_meaning():
    code = (
        "def f(x):\r\n    if x:  \n        return  'a  b'\u200b\n\n\n\n\nprint(f(1))\n"
    )
    cleaned = D.clean_code(code)
    assert cleaned == "def f(x):\n    if x:\n        return  'a  b'\n\n\nprint(f(1))"
    compile(cleaned, "<test>", "exec")
    with pytest.raises(TypeError, match="clean_code expects a str"):
        D.clean_code(b"x")
    source = D.course_splits("source").train
    assert all("\n    " in doc for doc in source[:5])  # indentation survives


def test_course_tokenizer_is_deterministic_and_round_trips():
    tok = D.course_tokenizer()
    assert tok.get_vocab_size() == 2048
    assert tok.token_to_id(D.EOS_TOKEN) == 0
    # the default is read from the file the course models ship with: it must be what
    # training on the course split gives now (same vocabulary, same merges, in order)
    retrained = D.train_hf_bpe(D.course_splits().train, 2048)
    shipped = Tokenizer.from_file(str(tokenization.SHIPPED_TOKENIZER))
    for loaded in (tok, shipped):
        assert loaded.get_vocab() == retrained.get_vocab()
        merges = [
            json.loads(t.to_str())["model"]["merges"] for t in (loaded, retrained)
        ]
        assert merges[0] == merges[1] and len(merges[0]) == 2048 - 257
        assert loaded.to_str() == retrained.to_str()
    text = D.course_splits().test[0] + " naïve 日本語 🙂"
    ids = D.encode_docs(tok, [text])[0]
    assert tok.decode(ids) == text
    assert D.course_tokenizer(512).get_vocab_size() == 512


def test_course_tokenizer_loads_the_shipped_file_and_trains_other_sizes(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained although the shipped tokenizer fits")

    tokenization._course_tokenizer.cache_clear()
    try:
        monkeypatch.setattr(tokenization, "train_hf_bpe", no_training)
        assert D.course_tokenizer().get_vocab_size() == 2048  # read, not trained
        with pytest.raises(AssertionError, match="trained although"):
            D.course_tokenizer(300)  # no file ships for this size: it trains
        missing = {(2048, "python"): tokenization.SHIPPED_TOKENIZER.with_name("x")}
        monkeypatch.setattr(tokenization, "_SHIPPED", missing)
        tokenization._course_tokenizer.cache_clear()
        with pytest.raises(AssertionError, match="trained although"):
            D.course_tokenizer()  # the file is missing: it trains
    finally:
        monkeypatch.undo()
        tokenization._course_tokenizer.cache_clear()


def test_course_data_is_encoded_once_and_every_call_gets_its_own_copy():
    tok = D.course_tokenizer()
    splits = D.course_splits()
    a = D.course_data()
    assert a.eos_id == tok.token_to_id(D.EOS_TOKEN) == 0
    assert a.val_docs == D.encode_docs(tok, splits.val)
    head = [t for doc in D.encode_docs(tok, splits.train[:50]) for t in (*doc, 0)]
    assert a.train_stream[: len(head)].tolist() == head
    assert (a.train_stream == 0).sum() == len(splits.train)  # one EOS per document
    expected = (a.train_stream.clone(), [list(d) for d in a.val_docs])
    a.train_stream[:10] = -1  # callers may modify what they get ...
    a.val_docs[0].append(-1)
    a.val_docs.pop()
    b = D.course_data()  # ... without changing the next caller's copy
    assert torch.equal(b.train_stream, expected[0]) and b.val_docs == expected[1]
    assert b.train_stream.data_ptr() != a.train_stream.data_ptr()


def test_pack_blocks_and_dataloader():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    blocks = D.pack_blocks(docs, context_length=4, eos_id=0)
    # stream: 1 2 3 0 4 5 0 6 7 8 9 0 (12 tokens) -> (12 - 1) // 4 = 2 blocks
    assert blocks.dtype == torch.long
    assert blocks.tolist() == [[1, 2, 3, 0, 4], [4, 5, 0, 6, 7]]
    loader = D.make_dataloader(blocks, batch_size=2, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == y.shape == (2, 4)
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="too few"):
        D.pack_blocks([[1]], context_length=4, eos_id=0)


def test_dataloader_shuffle_is_seeded():
    blocks = torch.arange(70).reshape(10, 7)
    order = [
        [x[:, 0].tolist() for x, _ in D.make_dataloader(blocks, 3, True, seed=s)]
        for s in (0, 0, 1)
    ]
    assert order[0] == order[1] != order[2]
