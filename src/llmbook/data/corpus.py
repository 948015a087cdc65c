"""The course's text: a fixed snapshot of what Python itself ships.

The course needs text to tokenize, count, embed and train on, and it must not depend on
the network: every notebook has to run offline, on a laptop, in Colab and in CI, and
give the same numbers everywhere. So the corpora were assembled once from the standard
library of CPython 3.11.7 and ship with the package as one compressed file
(``corpus-snapshot.json.gz``, about 1.3 MB) whose SHA-256 is checked on every load.
Every Python version and platform therefore sees exactly the same documents, splits and
tokens. ``tools/make_corpus_snapshot.py`` rebuilds the file from a running interpreter
(the functions below that start with ``build_``).

Corpora (pass the name to :func:`load_corpus`):

``"docstrings"``
    English prose with a technical flavour: the docstrings of a fixed allow-list of
    standard-library modules (:data:`STDLIB_MODULES`) and of their public classes,
    functions and methods, cleaned with :func:`inspect.cleandoc`. They were read from
    the modules' source files with :mod:`ast` (not by introspecting the imported
    objects), so the corpus cannot change when another library monkeypatches the
    standard library.
``"topics"``
    The help-topic texts that ``help()`` shows for keywords and language topics (for
    example ``help("with")``), from ``pydoc_data.topics.topics``: one document per
    topic, in key order. Long, prose-heavy extracts of the Language Reference.
``"source"``
    Python code: the source file of each module in :data:`STDLIB_MODULES` (a package's
    ``__init__.py``), in module-name order.
``"python"``
    All three together (docstrings, then topics, then source): THE course corpus that
    the course split, the course tokenizer, the n-gram baseline and the course's
    models use.

Provenance and license: all of this text is part of CPython 3.11.7, copyright the
Python Software Foundation, and is distributed under the PSF License Agreement (the
"Python Software Foundation License", see ``license()`` in any interpreter or
https://docs.python.org/3/license.html), which permits redistribution with the
copyright notice; :data:`LICENSE_NOTICE` is stored inside the snapshot. We use the
text unchanged apart from whitespace cleaning of docstrings.

Determinism: modules are visited in sorted name order and definitions in source
order, and exact duplicates keep their first occurrence. Results are cached in-process.

The opt-in :func:`llmbook.data.hub.load_hub_corpus` loads a dataset from the Hugging
Face Hub instead.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import importlib
import inspect
import json
import sys
import types
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "CORPORA",
    "STDLIB_MODULES",
    "SNAPSHOT_PATH",
    "SNAPSHOT_SHA256",
    "LICENSE_NOTICE",
    "load_corpus",
    "corpus_stats",
    "build_documents",
    "write_snapshot",
    "stored_splits",
]

#: Names accepted by :func:`load_corpus`; "python" is the other three together.
CORPORA: tuple[str, ...] = ("docstrings", "topics", "source", "python")
#: The corpora stored in the snapshot ("python" is assembled from them).
_STORED: tuple[str, ...] = ("docstrings", "topics", "source")

#: The shipped snapshot and its SHA-256 (of the compressed file's bytes).
SNAPSHOT_PATH = Path(__file__).resolve().parent / "corpus-snapshot.json.gz"
SNAPSHOT_SHA256 = "a835b3c342a2f97efdc773d031cb6b7b31fd7fc4ba86891daad18ddb9ad59273"

LICENSE_NOTICE = (
    "Text from CPython 3.11.7 (docstrings, pydoc_data topics and source code of the "
    "standard library). Copyright (c) 2001-2023 Python Software Foundation; All "
    "Rights Reserved. Distributed under the PSF License Agreement: "
    "https://docs.python.org/3/license.html"
)

#: Pure-Python standard-library modules that import quickly and without side effects
#: (no output, no windows, no network, no optional C libraries such as ``_ssl``,
#: ``_sqlite3``, ``_bz2`` or ``_lzma`` that some Python builds lack, and nothing that
#: is deprecated and warns on import). Test packages, ``this``, ``antigravity``,
#: ``tkinter``, ``turtle`` and ``idlelib`` are deliberately absent. A module missing
#: from the running interpreter (``tomllib`` before 3.11) is skipped.
STDLIB_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "email.message",
    "email.parser",
    "email.utils",
    "enum",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http",
    "http.client",
    "http.cookies",
    "http.server",
    "imaplib",
    "inspect",
    "ipaddress",
    "json",
    "json.decoder",
    "json.encoder",
    "locale",
    "logging",
    "logging.handlers",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pkgutil",
    "platform",
    "plistlib",
    "pprint",
    "profile",
    "pstats",
    "queue",
    "random",
    "re",
    "reprlib",
    "selectors",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)


# --- helpers --------------------------------------------------------------------------


def _import_quietly(name: str) -> types.ModuleType | None:
    """Import a stdlib module, or return None if this interpreter lacks it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:  # ImportError, or a broken optional dependency
            return None


def _allowed_modules() -> Iterator[tuple[str, types.ModuleType]]:
    for name in sorted(STDLIB_MODULES):
        module = _import_quietly(name)
        if module is not None:
            yield name, module


def _source_file(module: types.ModuleType) -> Path | None:
    # Frozen stdlib modules (os, codecs, ... on 3.11+) still set __file__.
    filename = getattr(module, "__file__", None)
    if not filename or not filename.endswith(".py"):
        return None
    path = Path(filename)
    return path if path.is_file() else None


def _read_source(module: types.ModuleType) -> str | None:
    path = _source_file(module)
    return None if path is None else path.read_text(encoding="utf-8")


_Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _public_definitions(body: list[ast.stmt]) -> Iterator[_Definition]:
    """Public classes and functions in a statement list, in source order.

    Looks inside ``if``/``try``/``with`` blocks (modules often define a function
    differently per platform) but not inside function bodies.
    """
    for node in body:
        if isinstance(node, _Definition):
            if not node.name.startswith("_"):
                yield node
        elif isinstance(node, (ast.If, ast.For, ast.While)):
            yield from _public_definitions(node.body)
            yield from _public_definitions(node.orelse)
        elif isinstance(node, ast.With):
            yield from _public_definitions(node.body)
        elif isinstance(node, ast.Try):
            yield from _public_definitions(node.body)
            for handler in node.handlers:
                yield from _public_definitions(handler.body)
            yield from _public_definitions(node.orelse)
            yield from _public_definitions(node.finalbody)


def _docstrings_of(tree: ast.Module | _Definition) -> Iterator[str | None]:
    """The docstring of ``tree``, then (recursively) of its public classes/functions.

    Function bodies are not searched: a nested helper is an implementation detail.
    """
    yield ast.get_docstring(tree, clean=False)
    for node in _public_definitions(tree.body):
        if isinstance(node, ast.ClassDef):
            yield from _docstrings_of(node)
        else:
            yield ast.get_docstring(node, clean=False)


def _clean(docs: Iterable[str | None]) -> tuple[str, ...]:
    """Clean with ``inspect.cleandoc``, drop empty ones, and remove exact duplicates."""
    cleaned = (inspect.cleandoc(doc).strip() for doc in docs if doc)
    return tuple(dict.fromkeys(text for text in cleaned if text))


def _docstrings() -> Iterator[str | None]:
    for _, module in _allowed_modules():
        source = _read_source(module)
        if source is not None:
            yield from _docstrings_of(ast.parse(source))


def _topics() -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # some Linux distributions split pydoc_data out
        raise RuntimeError(
            "the 'topics' corpus needs the standard-library package pydoc_data, which "
            "this Python installation lacks; use load_corpus('docstrings') instead"
        ) from err
    for key in sorted(topics):
        yield topics[key]


def _sources() -> Iterator[str]:
    for _, module in _allowed_modules():
        source = _read_source(module)
        if source is not None:
            yield source


def build_documents(name: str) -> tuple[str, ...]:
    """Build a stored corpus from the RUNNING interpreter's standard library (used by
    ``tools/make_corpus_snapshot.py``; the course itself reads the snapshot).

    Every document, cleaned and deduplicated, before length filtering.
    """
    if name == "docstrings":
        return _clean(_docstrings())
    if name == "topics":
        return _clean(_topics())
    if name == "source":
        # Source files are kept verbatim: cleandoc would re-indent code.
        return tuple(dict.fromkeys(s for s in _sources() if s.strip()))
    raise ValueError(f"unknown corpus {name!r}: choose one of {', '.join(_STORED)}")


def write_snapshot(
    path: str | Path = SNAPSHOT_PATH,
    splits: dict[str, dict[str, list[str]]] | None = None,
) -> str:
    """Write the snapshot of this interpreter's corpora; returns its SHA-256.

    ``splits`` (corpus name -> {"train", "val", "test"} lists of cleaned documents)
    stores the output of the course's split pipeline with the corpora, so that the
    split never depends on the reader's Python (whose Unicode tables, used by
    cleaning, change between versions). The file is gzip-compressed JSON with a
    fixed timestamp: the same content always gives the same bytes and hash.
    """
    payload = {
        "format": 1,
        "python": ".".join(map(str, sys.version_info[:3])),
        "license": LICENSE_NOTICE,
        "corpora": {name: list(build_documents(name)) for name in _STORED},
        "splits": splits or {},
    }
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@functools.cache
def _payload() -> dict:
    if not SNAPSHOT_PATH.is_file():
        raise FileNotFoundError(
            f"the corpus snapshot {SNAPSHOT_PATH} is missing: reinstall llmbook (the "
            "file ships with the package)"
        )
    data = SNAPSHOT_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SNAPSHOT_SHA256:
        raise RuntimeError(
            f"the corpus snapshot {SNAPSHOT_PATH} is corrupt or was changed: its "
            f"SHA-256 is {digest}, expected {SNAPSHOT_SHA256}; reinstall llmbook"
        )
    return json.loads(gzip.decompress(data))


@functools.cache
def _snapshot() -> dict[str, tuple[str, ...]]:
    payload = _payload()
    corpora = {name: tuple(payload["corpora"][name]) for name in _STORED}
    corpora["python"] = corpora["docstrings"] + corpora["topics"] + corpora["source"]
    return corpora


@functools.cache
def stored_splits(name: str) -> dict[str, tuple[str, ...]] | None:
    """The course split of corpus ``name`` as stored in the snapshot (or None)."""
    split = _payload()["splits"].get(name)
    if split is None:
        return None
    return {part: tuple(split[part]) for part in ("train", "val", "test")}


def _documents(name: str) -> tuple[str, ...]:
    """Every document of a corpus, from the snapshot, before length filtering."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)}")
    return _snapshot()[name]


# --- public API -----------------------------------------------------------------------


def load_corpus(
    name: str = "docstrings",
    *,
    max_docs: int | None = None,
    min_chars: int = 40,
) -> list[str]:
    """Load one of the built-in offline corpora as a list of documents.

    Args:
        name: ``"docstrings"``, ``"topics"``, ``"source"`` or ``"python"`` (all
            three; see the module docstring).
        max_docs: keep only the first ``max_docs`` documents (None keeps all).
        min_chars: drop documents shorter than this many characters (after cleaning).

    Returns:
        A new list of ``str`` documents, in the same order on every call, on every
        machine and every Python version (read from the shipped snapshot). Exact
        duplicates within a stored corpus are removed.

    Raises:
        ValueError: unknown ``name``, or a negative ``max_docs`` / ``min_chars``.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)}")
    if max_docs is not None and max_docs < 0:
        raise ValueError(f"max_docs must be None or >= 0, got {max_docs}")
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    docs = [doc for doc in _documents(name) if len(doc) >= min_chars]
    return docs if max_docs is None else docs[:max_docs]


def corpus_stats(docs: Iterable[str]) -> dict[str, float]:
    """Summary sizes of a list of documents.

    Returns:
        ``{"n_docs": int, "n_chars": int, "mean_chars": float}``; sizes are in
        characters (Unicode code points), and ``mean_chars`` is 0.0 for no documents.
    """
    lengths = [len(d) for d in docs]
    n_docs = len(lengths)
    n_chars = sum(lengths)
    return {
        "n_docs": n_docs,
        "n_chars": n_chars,
        "mean_chars": n_chars / n_docs if n_docs else 0.0,
    }
