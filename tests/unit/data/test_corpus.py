"""llmbook.data.corpus: the shipped snapshot of the corpora Python ships.

The snapshot was made on CPython 3.11.7; every interpreter reads the same documents,
so the sizes below are exact. Rebuilding from the running interpreter
(``build_documents``) reproduces the snapshot on 3.11.7 only.

load_hub_corpus is only tested against a fake ``datasets`` module: the tests never
touch the network.
"""

import ast
import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from llmbook.data import corpus as corpus_module
from llmbook.data.corpus import (
    CORPORA,
    LICENSE_NOTICE,
    SNAPSHOT_PATH,
    STDLIB_MODULES,
    build_documents,
    corpus_stats,
    load_corpus,
)
from llmbook.data.hub import load_hub_corpus

SIZES = {  # name: (documents, characters), the same on every Python
    "docstrings": (1905, 574_451),
    "topics": (78, 464_292),
    "source": (100, 3_798_516),
    "python": (2083, 4_837_259),
}
ON_SNAPSHOT_PYTHON = sys.version_info[:3] == (3, 11, 7)
needs_snapshot_python = pytest.mark.skipif(
    not ON_SNAPSHOT_PYTHON, reason="the snapshot was built on CPython 3.11.7"
)


def digest(docs: list[str]) -> str:
    return hashlib.sha256("\x00".join(docs).encode()).hexdigest()


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_is_deterministic_large_and_unique(name):
    docs = load_corpus(name)
    again = load_corpus(name)
    assert docs == again
    assert docs is not again  # callers get their own list
    docs.clear()
    assert load_corpus(name) == again  # mutating a result never touches the cache
    docs = again

    n_docs, n_chars = SIZES[name]
    stats = corpus_stats(docs)
    assert (stats["n_docs"], stats["n_chars"]) == (n_docs, n_chars)
    assert len(set(docs)) == len(docs), "exact duplicates must be removed"
    assert all(isinstance(d, str) and len(d) >= 40 for d in docs)


def test_python_is_the_three_corpora_in_order():
    parts = [load_corpus(n, min_chars=0) for n in ("docstrings", "topics", "source")]
    assert load_corpus("python", min_chars=0) == [d for part in parts for d in part]


@needs_snapshot_python
@pytest.mark.parametrize("name", ["docstrings", "topics", "source"])
def test_snapshot_equals_a_rebuild_from_this_interpreter(name):
    assert list(build_documents(name)) == load_corpus(name, min_chars=0)


def test_snapshot_is_checked_and_carries_the_license(tmp_path, monkeypatch):
    import gzip

    payload = json.loads(gzip.decompress(SNAPSHOT_PATH.read_bytes()))
    assert payload["license"] == LICENSE_NOTICE and "PSF" in LICENSE_NOTICE
    assert payload["python"] == "3.11.7"
    corrupt = tmp_path / "corpus.json.gz"
    corrupt.write_bytes(SNAPSHOT_PATH.read_bytes()[:-1] + b"x")
    monkeypatch.setattr(corpus_module, "SNAPSHOT_PATH", corrupt)
    corpus_module._payload.cache_clear()
    corpus_module._snapshot.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="corrupt or was changed"):
            load_corpus("docstrings")
        monkeypatch.setattr(corpus_module, "SNAPSHOT_PATH", tmp_path / "missing.gz")
        corpus_module._payload.cache_clear()
        with pytest.raises(FileNotFoundError, match="snapshot .* is missing"):
            load_corpus("docstrings")
    finally:
        monkeypatch.undo()
        corpus_module._payload.cache_clear()
        corpus_module._snapshot.cache_clear()
    assert corpus_stats(load_corpus("docstrings"))["n_docs"] == 1905


@needs_snapshot_python
def test_rebuild_is_unchanged_in_a_process_that_imports_torch():
    # torch replaces inspect.getfile and transformers patches logging.Logger; the
    # corpus is read from source files, so neither may change it. A different hash
    # seed checks that nothing depends on set or dict ordering of strings.
    code = (
        "import torch, transformers, hashlib\n"
        "from llmbook.data.corpus import build_documents\n"
        "d = [x for x in build_documents('docstrings') if len(x) >= 40]\n"
        "print(hashlib.sha256('\\x00'.join(d).encode()).hexdigest())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    assert result.stdout.strip() == digest(load_corpus("docstrings"))


@needs_snapshot_python
def test_docstrings_are_clean_prose_from_the_allow_list():
    docs = load_corpus("docstrings")
    assert all(d == d.strip() and "\t" not in d[:1] for d in docs)
    assert inspect.cleandoc(textwrap.dedent.__doc__) in docs
    assert inspect.cleandoc(json.__doc__) in docs  # a package docstring
    assert inspect.cleandoc(Path.__doc__) in docs
    # private helpers are not part of the corpus
    assert inspect.cleandoc(textwrap.TextWrapper._split.__doc__) not in docs


def test_allow_list_excludes_modules_with_side_effects():
    forbidden = {"antigravity", "this", "tkinter", "turtle", "idlelib", "test"}
    roots = {name.split(".")[0] for name in STDLIB_MODULES}
    assert not forbidden & roots
    assert len(STDLIB_MODULES) == len(set(STDLIB_MODULES))
    assert 60 <= len(STDLIB_MODULES) <= 100


@needs_snapshot_python
def test_topics_follow_pydoc_key_order():
    from pydoc_data.topics import topics

    expected = [inspect.cleandoc(topics[key]) for key in sorted(topics)]
    assert load_corpus("topics") == list(dict.fromkeys(expected))
    assert any(d.startswith('The "with" statement') for d in expected)


def test_source_is_verbatim_python():
    docs = load_corpus("source")
    if ON_SNAPSHOT_PYTHON:
        assert Path(textwrap.__file__).read_text(encoding="utf-8") in docs
    for doc in docs:
        ast.parse(doc)  # valid Python


def test_max_docs_and_min_chars():
    full = load_corpus("docstrings")
    assert load_corpus("docstrings", max_docs=10) == full[:10]
    assert load_corpus("docstrings", max_docs=0) == []
    assert load_corpus("docstrings", max_docs=10**9) == full
    long = load_corpus("docstrings", min_chars=500)
    assert 0 < len(long) < len(full)
    assert all(len(d) >= 500 for d in long)
    assert set(long) <= set(full)
    assert len(load_corpus("docstrings", min_chars=0)) >= len(full)


def test_unknown_corpus_and_bad_arguments():
    with pytest.raises(
        ValueError,
        match="unknown corpus 'foo': choose one of docstrings, topics, source, python",
    ):
        load_corpus("foo")
    with pytest.raises(ValueError, match="max_docs must be None or >= 0, got -1"):
        load_corpus(max_docs=-1)
    with pytest.raises(ValueError, match="min_chars must be >= 0, got -5"):
        load_corpus(min_chars=-5)


def test_corpus_stats():
    assert corpus_stats(["ab", "abcd"]) == {"n_docs": 2, "n_chars": 6, "mean_chars": 3}
    assert corpus_stats([]) == {"n_docs": 0, "n_chars": 0, "mean_chars": 0.0}


# --- load_hub_corpus, without a network ----------------------------------------------

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class FakeDataset(list):
    column_names = ["text", "label"]


def fake_datasets(load_dataset) -> types.ModuleType:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    return module


def never_called(*args, **kwargs):
    raise AssertionError("load_dataset must not be called")


def test_hub_corpus_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(
        RuntimeError, match=r"needs the 'datasets' package.*load_corpus"
    ):
        load_hub_corpus("roneneldan/TinyStories")


def test_hub_corpus_refuses_offline_mode(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(never_called))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        RuntimeError,
        match=r"needs internet access, but offline mode is on.*load_corpus",
    ):
        load_hub_corpus("roneneldan/TinyStories")


def test_hub_corpus_unreachable_hub(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(unreachable))
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match=r"could not load dataset 'x/y'.*internet"):
        load_hub_corpus("x/y")


def test_hub_corpus_reads_text_field(monkeypatch):
    calls = []
    rows = FakeDataset({"text": t, "label": 0} for t in ["a", "", "b", "c", "d"])

    def load_dataset(name, split, streaming):
        calls.append((name, split, streaming))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(load_dataset))
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    assert load_hub_corpus("x/y") == ["a", "b", "c", "d"]
    assert load_hub_corpus("x/y", split="test", max_docs=2) == ["a", "b"]
    assert calls == [("x/y", "train", False), ("x/y", "test", True)]
    with pytest.raises(ValueError, match="has no column 'body': choose one of text"):
        load_hub_corpus("x/y", text_field="body")
