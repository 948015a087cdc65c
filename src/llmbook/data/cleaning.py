"""Cleaning and deduplication of documents (Chapter 2).

``clean_text`` normalises Unicode and strips markup; ``deduplicate`` removes exact
copies; MinHash with locality-sensitive hashing (``minhash_signatures``,
``near_duplicates``, ``remove_near_duplicates``) removes near copies. All of it is
deterministic: nothing depends on Python's salted ``hash`` or on the machine.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "clean_text",
    "clean_code",
    "dedup_key",
    "deduplicate",
    "shingles",
    "jaccard",
    "minhash_signatures",
    "near_duplicates",
    "remove_near_duplicates",
]

# --- cleaning ----------------------------------------------------------------------

# :func:`name`, :class:`~pkg.Name`, :py:meth:`x <target>`  (a Sphinx/reST role)
_ROLE = re.compile(r":(?:[A-Za-z][\w-]*:)+`~?([^`]+)`")
# ``literal``  and  `interpreted`  (reST inline markup)
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"`([^`\n]+)`_{0,2}")
# **strong**  (single *emphasis* is left alone: it collides with *args)
_STRONG = re.compile(r"\*\*([^*\n]+)\*\*")
# HTML tags from a fixed list, so that placeholders such as <filename> survive
_HTML_TAGS = (
    "a|abbr|b|blockquote|body|br|code|dd|div|dl|dt|em|h[1-6]|head|hr|html|i|img|li|"
    "meta|ol|p|pre|span|strong|sub|sup|table|tbody|td|th|thead|title|tr|tt|u|ul"
)
_HTML = re.compile(rf"</?(?:{_HTML_TAGS})(?:\s[^<>]*)?/?>", re.IGNORECASE)
_HTML_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1>", re.IGNORECASE | re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# a reST section underline/overline: a line of one repeated punctuation character
_UNDERLINE = re.compile(r"^([=\-~^*#+\"'`])\1{2,}$")
# control characters other than newline and tab (category Cc), plus zero-width ones
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")


def _role_text(match: re.Match[str]) -> str:
    text = match.group(1)
    # :ref:`title <target>` keeps the title
    titled = re.fullmatch(r"(.*\S)\s*<[^<>]+>", text, re.DOTALL)
    return titled.group(1) if titled else text


def clean_text(text: str, *, form: str = "NFKC") -> str:
    """Strip markup and normalise a document, in this exact order.

    1. Unicode normalisation to ``form`` (default NFKC: compatibility characters such
       as ligatures, full-width letters and non-breaking spaces become their plain
       equivalents; ``"NFC"`` only composes accents).
    2. HTML: ``<script>``/``<style>`` blocks and ``<!-- comments -->`` are removed;
       tags from a fixed list of real HTML element names (``<b>``, ``</p>``,
       ``<a href=...>``, ...) are removed while their text is kept; entities
       (``&amp;``, ``&#233;``) are unescaped. Other angle-bracket words, such as the
       placeholder ``<filename>``, are kept.
    3. reST/Sphinx: roles ``:func:`name``` -> ``name`` (``~`` prefix dropped,
       ``title <target>`` -> ``title``); ````literal```` -> ``literal``;
       ```text``` -> ``text``; ``**strong**`` -> ``strong``; section underlines
       (a line of 3+ copies of one of ``= - ~ ^ * # + " ' ```) are dropped.
    4. Control and zero-width characters are removed (newline and tab are kept).
    5. Whitespace: runs of spaces/tabs become one space, every line is stripped,
       runs of blank lines become one blank line (paragraphs survive), and the
       text is stripped.

    Returns ``""`` for a document that is only markup and whitespace.
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_text expects a str, got {type(text).__name__}")
    if form not in {"NFC", "NFKC", "NFD", "NFKD"}:
        raise ValueError(f"unknown unicode normal form {form!r}")
    text = unicodedata.normalize(form, text)
    text = _HTML_BLOCK.sub(" ", text)
    text = _HTML_COMMENT.sub(" ", text)
    text = _HTML.sub("", text)
    text = html.unescape(text)
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if not _UNDERLINE.match(line)]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    # normalising again: unescaping and stripping can expose decomposed sequences
    return unicodedata.normalize(form, text).strip()


def clean_code(text: str) -> str:
    """Normalise a source file without touching what the code means.

    Unicode NFC (composes accents only), control and zero-width characters removed
    (tab and newline kept), trailing whitespace of every line removed, runs of more
    than two blank lines shortened to two, leading and trailing blank lines dropped.
    Indentation and everything inside a line stay as they are: unlike
    :func:`clean_text`, this never collapses spaces, which in Python are syntax.
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_code expects a str, got {type(text).__name__}")
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    text = "\n".join(line.rstrip() for line in text.splitlines())
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip("\n")


# --- exact deduplication -----------------------------------------------------------


def dedup_key(doc: str) -> str:
    """The hash two documents share when they are exact duplicates up to case/spaces.

    SHA-1 (hex) of the case-folded text with every run of whitespace turned into one
    space. Stable across processes and machines (unlike Python's ``hash``).
    """
    normalised = " ".join(doc.casefold().split())
    return hashlib.sha1(normalised.encode("utf-8")).hexdigest()


def deduplicate(docs: Iterable[str]) -> list[str]:
    """Remove exact duplicates by :func:`dedup_key`, keeping first occurrences in order.

    Empty documents (after stripping) are dropped as well.
    """
    seen: set[str] = set()
    kept = []
    for doc in docs:
        if not doc.strip():
            continue
        key = dedup_key(doc)
        if key not in seen:
            seen.add(key)
            kept.append(doc)
    return kept


# --- near-duplicate detection: MinHash + LSH, from scratch --------------------------

_P = (1 << 31) - 1  # a Mersenne prime; every hash below lives in [0, _P)
_BASE = 1_000_003 % _P


def _shingle_text(doc: str) -> str:
    return " ".join(doc.casefold().split())


def shingles(doc: str, ngram: int = 5) -> set[str]:
    """The set of character ``ngram``-grams of a document (its "shingles").

    The text is case-folded and its whitespace collapsed first. A document shorter than
    ``ngram`` characters has one shingle: itself.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    text = _shingle_text(doc)
    if len(text) <= ngram:
        return {text}
    return {text[i : i + ngram] for i in range(len(text) - ngram + 1)}


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Exact Jaccard similarity |A ∩ B| / |A ∪ B| of two documents' shingle sets."""
    sa, sb = shingles(a, ngram), shingles(b, ngram)
    return len(sa & sb) / len(sa | sb)


def _shingle_hashes(doc: str, ngram: int) -> np.ndarray:
    """Distinct polynomial hashes (mod _P) of the character n-grams; int64, (n,)."""
    text = _shingle_text(doc)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    if len(codes) <= ngram:
        windows = codes[None, :]
    else:
        windows = np.lib.stride_tricks.sliding_window_view(codes, ngram)
    h = np.zeros(len(windows), dtype=np.int64)
    for k in range(windows.shape[1]):  # Horner's rule, vectorised over windows
        h = (h * _BASE + windows[:, k] + 1) % _P
    return np.unique(h)


def minhash_signatures(
    docs: Sequence[str], num_perm: int = 64, ngram: int = 5, seed: int = 0
) -> np.ndarray:
    """MinHash signatures, int64 of shape ``(len(docs), num_perm)``.

    Column ``j`` is ``min over shingles s of (a_j * h(s) + b_j) mod P``: ``h`` is a
    polynomial hash of the shingle and ``(a_j, b_j)`` are drawn once from a seeded
    generator, so each column acts as a random permutation of shingle space. For
    two documents, the probability that a column agrees equals their Jaccard
    similarity, so the fraction of agreeing columns estimates it (standard error
    ``sqrt(J (1 - J) / num_perm)``).
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _P, size=num_perm, dtype=np.int64)[:, None]
    b = rng.integers(0, _P, size=num_perm, dtype=np.int64)[:, None]
    sigs = np.empty((len(docs), num_perm), dtype=np.int64)
    for i, doc in enumerate(docs):
        h = _shingle_hashes(doc, ngram)[None, :]
        sigs[i] = ((a * h + b) % _P).min(axis=1)  # a*h < 2**62: no overflow
    return sigs


def near_duplicates(
    docs: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 64,
    ngram: int = 5,
    *,
    bands: int | None = None,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """Pairs of near-duplicate documents, found with MinHash and LSH banding.

    Signatures (:func:`minhash_signatures`) are cut into ``bands`` bands of
    ``num_perm // bands`` rows (default: 4 rows per band); two documents become a
    candidate pair when all rows of at least one band agree. A candidate is reported
    when its estimated Jaccard similarity (the fraction of agreeing signature
    columns) is at least ``threshold``.

    Returns:
        ``(i, j, estimated_jaccard)`` with ``i < j``, sorted by ``(i, j)``.
        Deterministic for a given ``seed``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    bands = bands if bands is not None else max(1, num_perm // 4)
    if num_perm % bands:
        raise ValueError(f"num_perm={num_perm} is not divisible by bands={bands}")
    rows = num_perm // bands
    sigs = minhash_signatures(docs, num_perm, ngram, seed)
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, row in enumerate(sigs[:, band * rows : (band + 1) * rows]):
            buckets.setdefault(row.tobytes(), []).append(i)
        for members in buckets.values():
            for x, i in enumerate(members):
                candidates.update((i, j) for j in members[x + 1 :])
    pairs = []
    for i, j in sorted(candidates):
        estimate = float((sigs[i] == sigs[j]).mean())
        if estimate >= threshold:
            pairs.append((i, j, estimate))
    return pairs


def remove_near_duplicates(
    docs: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 64,
    ngram: int = 5,
) -> list[str]:
    """Keep the first document of every near-duplicate cluster, in order.

    Clusters are the connected components of the :func:`near_duplicates` pairs.
    """
    parent = list(range(len(docs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_duplicates(docs, threshold, num_perm, ngram):
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)  # the earliest document is the root
    return [doc for i, doc in enumerate(docs) if find(i) == i]
