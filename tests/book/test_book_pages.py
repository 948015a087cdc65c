"""The book's pages describe the book as it is, not as it was going to be.

Words that promise work ("planned", "still being written", "to be added", "TODO") go
stale the day the work lands, and a reader cannot tell which promises were kept. No page
of the book may carry them: the appendix pages (book/*.md) and the markdown cells of
every chapter and student lab. A page that needs to say something is missing says what
is missing and why, in words that stay true. And every appendix page's relative links
resolve, and a "[Chapter N](...) §k" it writes names a section the chapter has (the
checks tests/book/test_faq.py applies to the FAQ, the tools page and the glossary, here for
every page). Nothing here executes a notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from test_faq import CHAPTER_SECTION, LINK, chapter_sections

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "book").glob("*.md"))
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb")) + sorted(
    (ROOT / "labs").glob("*.ipynb")
)

# A word, or phrase, is stale when it matches (a phrase may break across lines). "TODO" only in capitals: that is how a
# note to oneself is written, and the lower-case letters occur inside other words.
STALE = [
    re.compile(r"\bplanned\b", re.I),
    re.compile(r"\bstill\s+being\s+written\b", re.I),
    re.compile(r"\bto\s+be\s+added\b", re.I),
    re.compile(r"\bTODO\b"),
]

# Notebooks that still carry a stale word while their owner fixes it, with where it
# is. strict: the test fails as soon as the word is gone, so that the entry is removed.
# Notebooks allowed a stale word for a stated reason (none today).
KNOWN: dict[str, str] = {}


def stale_words(text: str) -> list[str]:
    """Each stale word of `text`, with a little of the text around it."""
    found = []
    for pattern in STALE:
        for match in pattern.finditer(text):
            start, end = max(0, match.start() - 40), match.end() + 40
            found.append(" ".join(text[start:end].split()))
    return found


def notebook_markdown(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_the_check_finds_each_word():
    text = (
        "A planned chapter. TODO: write. It is still being\nwritten; rows to be added."
    )
    assert len(stale_words(text)) == 4
    assert (
        stale_words("Planning is not a stale word; neither is todos or outplanned.")
        == []
    )


def test_pages_are_found():
    names = {p.name for p in PAGES}
    assert {"intro.md", "setup.md", "faq.md", "errata.md", "glossary.md"} <= names
    assert len([p for p in NOTEBOOKS if p.parent.name == "chapters"]) >= 13


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_has_no_stale_words(page):
    found = stale_words(page.read_text(encoding="utf-8"))
    assert found == [], f"book/{page.name}: " + " | ".join(found)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN[p.name], strict=True))
        if p.name in KNOWN
        else p
        for p in NOTEBOOKS
    ],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_notebook_markdown_has_no_stale_words(path):
    found = stale_words(notebook_markdown(path))
    assert found == [], f"{path.parent.name}/{path.name}: " + " | ".join(found)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_links_and_sections_resolve(page):
    text = page.read_text(encoding="utf-8")
    broken = [
        url
        for url in LINK.findall(text)
        if not re.match(r"[a-z]+:", url)
        and not url.startswith("#")
        and not (page.parent / url.split("#")[0]).resolve().exists()
    ]
    assert broken == [], f"book/{page.name} links to missing files: {broken}"
    wrong = [
        f"{url} §{number}"
        for url, number in CHAPTER_SECTION.findall(text)
        if number not in chapter_sections((page.parent / url).resolve())
    ]
    assert wrong == [], f"book/{page.name} names sections that do not exist: {wrong}"
