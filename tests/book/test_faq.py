"""The FAQ (book/faq.md) answers every question of the seeds' FAQ sections, and the
tools page (book/tools.md) gives exactly the versions that requirements.txt pins.

FAQ: every question found in a seed section whose heading says 常见问题 is a heading of
book/faq.md (verbatim, in Chinese), and every answer links into at least one chapter.
For the FAQ, the tools page and the glossary: every relative link resolves to a file
of the repository, and "[Chapter N](...) §k" names a section the chapter has. Nothing
here executes a notebook; the seed checks are skipped where the seeds are absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from test_seed_map import seeds_folder

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
FAQ = BOOK / "faq.md"
TOOLS = BOOK / "tools.md"
PAGES = [FAQ, TOOLS, BOOK / "glossary.md"]

HEADING = re.compile(r"^(#{1,4})\s*(.*)$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CHAPTER_SECTION = re.compile(r"\]\((\.\./chapters/[^)]+\.ipynb)\)\s+§(\d+(?:\.\d+)?)")
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")
TOOL_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([^|\s]+)\s*\|")


def seed_faq_questions(folder: Path) -> list[tuple[str, str]]:
    """(article, question) for each question in a seed's 常见问题 section.

    A question is a line of the section ending in a full-width question mark, in one of
    the three forms the seeds use: "Q: ...", "- **...**", or a numbered sub-heading.
    """
    found = []
    for path in sorted(folder.glob("*.txt")):
        level = None
        for line in path.read_text(encoding="utf-8").splitlines():
            heading = HEADING.match(line)
            if heading and line.startswith("#"):
                depth = len(heading.group(1))
                if "常见问题" in line:
                    level = depth
                    continue
                if level is not None and depth <= level:
                    level = None
            if level is None:
                continue
            text = line.strip()
            text = re.sub(r"^(?:\d+\.\s*)?Q:\s*", "", text)
            text = re.sub(r"^-\s*\*\*(.*)\*\*$", r"\1", text)
            text = re.sub(r"^#{2,4}\s*\d+(?:\.\d+)*\s*", "", text)
            if text.endswith("？") and not text.startswith(("A:", "*")):
                found.append((path.name[:3], text.strip()))
    return found


def faq_sections() -> dict[str, str]:
    """Heading -> text below it, for the ### headings of the FAQ."""
    sections, current = {}, None
    for line in FAQ.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_every_seed_faq_question_is_answered():
    folder = seeds_folder()
    if folder is None:
        pytest.skip("seed articles not found")
    questions = seed_faq_questions(folder)
    assert len(questions) >= 12, questions  # 001 §9: 3, 002 §8: 4, 004 §4.4: 2, §9: 3
    headings = list(faq_sections())
    missing = [
        f"{article}: {q}"
        for article, q in questions
        if not any(h.startswith(q) and f"({article} §" in h for h in headings)
    ]
    assert missing == [], "seed FAQ questions without an answer:\n" + "\n".join(missing)
    assert len(headings) == len(questions), "one heading per seed question"


def test_every_answer_links_into_a_chapter():
    for heading, body in faq_sections().items():
        chapters = [u for u in LINK.findall(body) if u.startswith("../chapters/")]
        assert chapters, f"{heading}: no link into a chapter"
        assert len(body.split()) <= 260, f"{heading}: answer is not brief"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for url in LINK.findall(text):
        if re.match(r"[a-z]+:", url) or url.startswith("#"):
            continue
        if not (page.parent / url.split("#")[0]).resolve().exists():
            broken.append(url)
    assert broken == [], f"{page.name}: links to missing files {broken}"


def chapter_sections(path: Path) -> set[str]:
    nb = nbformat.read(path, as_version=4)
    return {
        m.group(1)
        for c in nb.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if (m := re.match(r"^#{2,4}\s+(\d+(?:\.\d+)?)\.?\s", line))
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_chapter_sections_named_exist(page):
    text = page.read_text(encoding="utf-8")
    wrong = []
    for url, number in CHAPTER_SECTION.findall(text):
        chapter = (page.parent / url).resolve()
        if chapter.exists() and number not in chapter_sections(chapter):
            wrong.append(f"{chapter.name} §{number}")
    assert wrong == [], f"{page.name} names sections that do not exist: {wrong}"


def test_tools_page_gives_the_pinned_versions():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if match := PIN.match(line.strip()):
            pins[match.group(1).lower()] = match.group(2)
    rows = {}
    for line in TOOLS.read_text(encoding="utf-8").splitlines():
        if match := TOOL_ROW.match(line):
            rows[match.group(1).lower()] = match.group(2)
    assert len(pins) >= 20, "requirements.txt was not parsed"
    assert rows == pins, (
        f"missing from tools.md: {sorted(set(pins) - set(rows))}; "
        f"not pinned: {sorted(set(rows) - set(pins))}; "
        f"different: {sorted(k for k in set(rows) & set(pins) if rows[k] != pins[k])}"
    )
