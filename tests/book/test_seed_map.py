"""The seed map, the chapters' "Seed sections covered" boxes and the errata agree.

book/seed_map.md has one row per numbered section of the five seed articles; each
chapter's opening box lists exactly the sections the map sends to that chapter; every
page the map or the errata link to exists; every erratum names a real seed section.
The seed articles themselves live outside the repository (``shared/seeds`` next to or
inside the checkout, or ``$LLMBOOK_SEEDS``); the checks that read them are skipped where
they are absent. Nothing here executes a notebook.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
SEED_MAP = BOOK / "seed_map.md"
ERRATA = BOOK / "errata.md"
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

BOX_START = ":::{admonition} Seed sections covered"
NO_LINK_REASONS = ("truncated in the source", "not covered:")
FIELDS = ("**What it says.**", "**What is wrong.**", "**Fix.**", "**In the book.**")

HEADING = re.compile(r"^#{2,4}\s*(\d+(?:\.\d+)*)\.?\s*(\S.*)?$")
ROW = re.compile(r"^\|\s*(\d{3} §[^|]*?)\s*\|([^|]*)\|([^|]*)\|(.*)\|\s*$")
SECTION = re.compile(r"^(\d{3}) §(\d+(?:\.\d+)?)$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
BOX_ITEM = re.compile(r"^§(\d+(?:\.\d+)?)(?:\s*[–-]\s*§?(\d+(?:\.\d+)?))?$")
ERRATUM_REF = re.compile(r"(\d{3})((?:\s*(?:,|and)?\s*§\d+(?:\.\d+)?)+)|(\d{3}) title")


def seeds_folder() -> Path | None:
    candidates = [os.environ.get("LLMBOOK_SEEDS", "")]
    candidates += [ROOT / "shared" / "seeds", ROOT.parent / "shared" / "seeds"]
    for folder in candidates:
        if folder and Path(folder).is_dir() and any(Path(folder).glob("00*.txt")):
            return Path(folder)
    return None


def seed_sections(folder: Path) -> dict[str, str]:
    """Numbered leaf sections of every seed file: {"000 §3.4": heading text}.

    A heading is a numbered section when its text starts with a number ("3.4", "3.");
    a section is a leaf when no other numbered heading of its article lies below it.
    Lines inside code fences are not headings.
    """
    sections: dict[str, str] = {}
    for path in sorted(folder.glob("*.txt")):
        article = path.name[:3]
        numbered: dict[str, str] = {}
        in_code = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                in_code = not in_code
                continue
            match = None if in_code else HEADING.match(line)
            if match:
                numbered[match.group(1)] = (match.group(2) or "").strip()
        for number, title in numbered.items():
            if not any(other.startswith(number + ".") for other in numbered):
                sections[f"{article} §{number}"] = title
    return sections


def map_rows() -> list[tuple[str, str, str]]:
    """(section as written, Chinese title, where-in-the-book cell) for each map row."""
    rows = []
    for line in SEED_MAP.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.append(
                (match.group(1), match.group(2).strip(), match.group(4).strip())
            )
    return rows


def linked_chapter(target: str) -> str | None:
    match = re.match(r"^\.\./chapters/([^/#]+)\.ipynb(#.*)?$", target)
    return match.group(1) if match else None


def map_by_chapter() -> dict[str, set[str]]:
    by_chapter: dict[str, set[str]] = {}
    for section, _, where in map_rows():
        for target in LINK.findall(where):
            chapter = linked_chapter(target)
            if chapter:
                by_chapter.setdefault(chapter, set()).add(section)
    return by_chapter


def expand_box(text: str) -> set[str]:
    """'000 §1.1–1.3, §2.4 (note) · 001 §5.' -> {'000 §1.1', ..., '001 §5'}."""
    text = re.sub(r"\([^()]*\)", " ", text)
    text = " ".join(text.split()).rstrip(".")
    sections: set[str] = set()
    for group in text.split("·"):
        match = re.match(r"^\s*(\d{3})\s+(.+)$", group)
        assert match, f"box group without an article number: {group!r}"
        article, items = match.groups()
        for item in items.split(","):
            found = BOX_ITEM.match(item.strip())
            assert found, f"cannot read {item.strip()!r} in box group {group!r}"
            first, last = found.groups()
            if last is None:
                sections.add(f"{article} §{first}")
                continue
            head, _, lo = first.rpartition(".")
            head_last, _, hi = last.rpartition(".")
            assert head == head_last or not head_last, f"range across sections: {item}"
            prefix = f"{head}." if head else ""
            for n in range(int(lo), int(hi) + 1):
                sections.add(f"{article} §{prefix}{n}")
    return sections


def box_sections(path: Path) -> set[str]:
    source = nbformat.read(path, as_version=4).cells[0].source
    assert BOX_START in source, f"{path.name}: no 'Seed sections covered' box"
    lines = source.split(BOX_START, 1)[1].splitlines()[1:]
    listed = []
    for line in lines:
        if line.startswith(":class:"):
            continue
        if not line.strip() or line.strip() == ":::":
            break
        listed.append(line)
    assert listed, f"{path.name}: the box lists no sections"
    return expand_box(" ".join(listed))


def errata_entries() -> list[tuple[str, str]]:
    """(heading, body) of every '### ' entry of the errata page."""
    parts = re.split(r"^### (.+)$", ERRATA.read_text(encoding="utf-8"), flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]


def erratum_refs(heading: str) -> set[str]:
    refs = set()
    for article, numbers, title_article in ERRATUM_REF.findall(heading):
        if title_article:
            refs.add(f"{title_article} title")
        for number in re.findall(r"§(\d+(?:\.\d+)?)", numbers):
            refs.add(f"{article} §{number}")
    return refs


# --- the map itself ----------------------------------------------------------------


def test_map_rows_are_single_sections_listed_once():
    written = [section for section, _, _ in map_rows()]
    assert written, "book/seed_map.md has no rows"
    bad = [s for s in written if not SECTION.match(s)]
    assert bad == [], f"write one section per row, no ranges or lists: {bad}"
    twice = sorted({s for s in written if written.count(s) > 1})
    assert twice == [], f"sections listed twice in the seed map: {twice}"


def test_map_rows_link_or_say_why_not():
    for section, _, where in map_rows():
        if not LINK.search(where):
            assert where.startswith(NO_LINK_REASONS), (
                f"{section}: give a link, or say "
                f"'truncated in the source' or 'not covered: why'; got {where!r}"
            )


@pytest.mark.parametrize("page", [SEED_MAP, ERRATA], ids=lambda p: p.name)
def test_linked_pages_exist(page):
    targets = set(LINK.findall(page.read_text(encoding="utf-8")))
    local = {t for t in targets if "://" not in t}
    assert local, f"{page.name} links to no page of the book"
    missing = sorted(t for t in local if not (page.parent / t.split("#")[0]).exists())
    assert missing == [], f"{page.name} links to missing files: {missing}"


# --- against the seed articles -----------------------------------------------------


def test_map_has_every_seed_section():
    folder = seeds_folder()
    if folder is None:
        pytest.skip("seed articles not found (set LLMBOOK_SEEDS)")
    seeds = seed_sections(folder)
    mapped = {section for section, _, _ in map_rows()}
    assert sorted(set(seeds) - mapped) == [], "seed sections missing from the map"
    assert sorted(mapped - set(seeds)) == [], "map rows that are not seed sections"


def test_map_titles_match_the_seed_headings():
    folder = seeds_folder()
    if folder is None:
        pytest.skip("seed articles not found (set LLMBOOK_SEEDS)")
    seeds = seed_sections(folder)
    for section, title, _ in map_rows():
        if section in seeds:
            assert " ".join(title.split()) == " ".join(seeds[section].split()), section


def test_section_parser_on_a_small_article(tmp_path):
    (tmp_path / "009_x.txt").write_text(
        "# Title\n## 1.Intro\n## 2. Core\n### 2.1 A\n### 2.2 B\n#### not numbered\n"
        "```python\n## 3. inside code\n```\n## 4. End\n",
        encoding="utf-8",
    )
    assert seed_sections(tmp_path) == {
        "009 §1": "Intro",
        "009 §2.1": "A",
        "009 §2.2": "B",
        "009 §4": "End",
    }


# --- the chapters' boxes -----------------------------------------------------------


def test_box_notation_expands():
    text = "000 §1.1–1.3, §2.4 (a note, with a comma) · 001 §5 · 004 §5.2-§5.4."
    assert expand_box(text) == {
        "000 §1.1",
        "000 §1.2",
        "000 §1.3",
        "000 §2.4",
        "001 §5",
        "004 §5.2",
        "004 §5.3",
        "004 §5.4",
    }


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_box_equals_the_map(path):
    in_box = box_sections(path)
    in_map = map_by_chapter().get(path.stem, set())
    assert sorted(in_box - in_map) == [], f"{path.name}: in the box, not in the map"
    assert sorted(in_map - in_box) == [], f"{path.name}: in the map, not in the box"


def test_map_links_only_existing_chapters():
    existing = {path.stem for path in CHAPTERS}
    assert set(map_by_chapter()) <= existing


# --- the errata --------------------------------------------------------------------


def test_errata_name_seed_sections():
    folder = seeds_folder()
    known = (
        set(seed_sections(folder))
        if folder
        else {section for section, _, _ in map_rows()}
    )
    known |= {f"00{n} title" for n in range(5)}
    entries = errata_entries()
    assert entries, "book/errata.md has no '### ' entries"
    for heading, body in entries:
        refs = erratum_refs(heading)
        assert refs, f"erratum {heading!r} names no seed section"
        assert refs <= known, f"erratum {heading!r}: unknown {sorted(refs - known)}"
        missing = [field for field in FIELDS if field not in body]
        assert missing == [], f"erratum {heading!r} lacks {missing}"
