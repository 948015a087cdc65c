"""The book's citations and book/references.bib agree.

* every key of a ``{cite}`` role (``{cite}``, ``{cite:p}``, ``{cite:t}``, ...) in a
  chapter or a book page exists in references.bib (else the Jupyter Book build warns and
  prints "?" in the text);
* no key is defined twice in references.bib;
* every bib entry is cited somewhere, except those in ``UNCITED_ALLOWED`` (with the
  reason) - an entry nobody cites is either a missing citation or dead weight.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
BIB = ROOT / "book" / "references.bib"
PAGES = sorted((ROOT / "chapters").glob("*.ipynb")) + sorted(
    (ROOT / "book").glob("*.md")
)
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
ENTRY = re.compile(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)

# Entries that may stay uncited, with the reason. Keep this short.
UNCITED_ALLOWED: dict[str, str] = {}


def page_text(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return path.read_text(encoding="utf-8")


def bib_keys() -> list[str]:
    text = BIB.read_text(encoding="utf-8")
    return [
        key
        for kind, key in ENTRY.findall(text)
        if kind.lower() not in ("string", "comment", "preamble")
    ]


def cited_keys() -> dict[str, set[str]]:
    """key -> the pages citing it."""
    where: dict[str, set[str]] = {}
    for page in PAGES:
        for m in CITE.finditer(page_text(page)):
            for key in m.group(1).split(","):
                if key.strip():
                    where.setdefault(key.strip(), set()).add(page.name)
    return where


def test_parsers():
    assert CITE.findall("see {cite}`a,b` and {cite:t}`c`") == ["a,b", "c"]
    assert ENTRY.findall("@article{x1,\n title={T}}\n@misc{ y2 ,") == [
        ("article", "x1"),
        ("misc", "y2"),
    ]


def test_no_duplicate_keys():
    dup = [k for k, n in Counter(bib_keys()).items() if n > 1]
    assert not dup, f"keys defined twice in references.bib: {dup}"


def test_every_cited_key_exists():
    keys = set(bib_keys())
    missing = {k: sorted(p) for k, p in cited_keys().items() if k not in keys}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_every_entry_is_cited():
    cited = cited_keys()
    uncited = [k for k in bib_keys() if k not in cited and k not in UNCITED_ALLOWED]
    assert not uncited, f"bib entries cited nowhere in chapters/ or book/: {uncited}"
    stale = [k for k in UNCITED_ALLOWED if k in cited]
    assert not stale, (
        f"allowed-uncited entries that are now cited (remove them): {stale}"
    )
