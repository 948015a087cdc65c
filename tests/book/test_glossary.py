"""The bilingual glossary (book/glossary.md) and the {term} links of the chapters agree.

Each glossary entry names one idea by its English term(s), then its Chinese term(s) as
the seed articles write them, and an indented one-line definition that ends with
"First use: [page](link) §section." The checks:

* every Chinese term occurs verbatim in a seed, and an entry without one says why:
  either the seeds write the English term (and the seeds do), or the term is the
  chapters' own and is not in the seeds (and it is not); no term is listed twice;
* every {term} role in a chapter or appendix page names a glossary term;
* every entry is linked from a chapter, except the few listed below with the reason
  (an entry awaiting its chapter's link must be used, by a stated word, in the section
  its "First use" names);
* "First use" points at the first page, in book order, that links the entry, and the
  section it names is the section of that page where the first link sits;
* a chapter links an entry at most once (at its first use in that chapter).

Nothing here executes a notebook. The seed checks are skipped where the seed articles
are absent (see tests/book/test_seed_map.py for where they are looked for).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from test_seed_map import seeds_folder

ROOT = Path(__file__).resolve().parents[2]
GLOSSARY = ROOT / "book" / "glossary.md"
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
APPENDIX_PAGES = [ROOT / "book" / "faq.md", ROOT / "book" / "tools.md"]

# Entries first used in a chapter that has no {term} link to them yet: the chapter's
# owner adds the link (then remove the entry here). Value: (chapter file, word used).
# The word must occur in the chapter, in the section that the entry's "First use" names.
# These are the terms the chapters introduce beyond the seeds' vocabulary.
AWAITING_CHAPTER_LINK: dict[str, tuple[str, str]] = {
}  # fmt: skip
# Seed terms no chapter uses (yet): the FAQ or the tools page uses and links them.
APPENDIX_ONLY = {
    "downstream task", "conditional probability", "long-range dependency",
    "data augmentation", "pruning", "controllability", "TPU",
    "dynamic computation graph",
}  # fmt: skip
# An entry without a Chinese term says why: the seeds use the English word, or the term
# is the chapters' own and the seeds never use it (both are checked against the seeds).
SEEDS_WRITE_ENGLISH = "The seeds write the English term."
NOT_IN_SEEDS = "Not in the seeds."
CJK = re.compile(r"[\u3400-\u9fff]")
ROLE = re.compile(r"\{term\}`([^`]*)`")
FIRST_USE = re.compile(
    r"First use: \[[^\]]+\]\(([^)]+)\)(?: (§\d+(?:\.\d+)?)|, ([A-Za-z]+))?\.$"
)
SECTION = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)?)\.?\s")
NAMED = re.compile(r"^##\s+([A-Za-z]+)")


class Entry:
    def __init__(self, terms: list[str], definition: str):
        self.terms = terms
        self.definition = definition
        self.english = [t for t in terms if not CJK.search(t)]
        self.chinese = [t for t in terms if CJK.search(t)]
        self.key = self.english[0] if self.english else terms[0]


def parse_glossary() -> list[Entry]:
    text = GLOSSARY.read_text(encoding="utf-8")
    body = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    entries, terms, definition = [], [], []
    for line in body.splitlines()[1:]:
        if line.startswith(":"):  # directive option such as :sorted:
            continue
        if not line.strip():
            continue
        if line.startswith((" ", "\t")):
            definition.append(line.strip())
            continue
        if definition:
            entries.append(Entry(terms, " ".join(definition)))
            terms, definition = [], []
        terms.append(line.strip())
    if terms:
        entries.append(Entry(terms, " ".join(definition)))
    return entries


ENTRIES = parse_glossary()
BY_TERM = {t.lower(): e for e in ENTRIES for t in e.terms}


def role_target(role: str) -> str:
    match = re.fullmatch(r"(.*?)\s*<([^<>]+)>", role, re.S)
    return (match.group(2) if match else role).strip()


def page_markdown(path: Path) -> list[str]:
    """The markdown of a page: one string per markdown cell (one for a .md page)."""
    if path.suffix == ".md":
        return [path.read_text(encoding="utf-8")]
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def section_before(cells: list[str], cell: int, pos: int) -> str:
    """Label of the section in which position `pos` of cell `cell` sits."""
    texts = cells[:cell] + [cells[cell][:pos]]
    for text in reversed(texts):
        for line in reversed(text.splitlines()):
            if match := SECTION.match(line):
                return "§" + match.group(1)
            if match := NAMED.match(line):
                return match.group(1)
    return "introduction"


def links(path: Path) -> list[tuple[Entry | None, str, str]]:
    """(entry, role text, section label) for every {term} role of a page, in order."""
    cells = page_markdown(path)
    found = []
    for i, text in enumerate(cells):
        for match in ROLE.finditer(text):
            target = role_target(match.group(1))
            found.append(
                (
                    BY_TERM.get(target.lower()),
                    target,
                    section_before(cells, i, match.start()),
                )
            )
    return found


PAGES = CHAPTERS + APPENDIX_PAGES  # book order
LINKS = {path: links(path) for path in PAGES}


def page_of(link: str) -> Path:
    return (GLOSSARY.parent / link).resolve()


def test_glossary_is_parsed():
    assert len(ENTRIES) >= 100, f"only {len(ENTRIES)} entries parsed"
    for entry in ENTRIES:
        assert entry.english, f"{entry.terms}: no English term"
        assert entry.definition, f"{entry.key}: no definition"


def test_no_term_is_listed_twice():
    seen: dict[str, str] = {}
    for entry in ENTRIES:
        for term in entry.terms:
            assert term.lower() not in seen, (
                f"{term!r} in {entry.key} and {seen[term.lower()]}"
            )
            seen[term.lower()] = entry.key


def test_chinese_terms_are_the_seeds_own():
    folder = seeds_folder()
    if folder is None:
        pytest.skip("seed articles not found")
    seeds = "\n".join(p.read_text(encoding="utf-8") for p in folder.glob("*.txt"))
    problems = []
    for entry in ENTRIES:
        problems += [
            f"{entry.key}: {term!r} does not occur in the seeds"
            for term in entry.chinese
            if term not in seeds
        ]
        if not entry.chinese:
            pattern = "|".join(
                r"[\s-]?".join(map(re.escape, re.split(r"[\s-]+", t)))
                for t in entry.english
            )
            in_seeds = re.search(pattern, seeds, re.I) is not None
            if SEEDS_WRITE_ENGLISH in entry.definition:
                if not in_seeds:
                    problems.append(f"{entry.key}: not in the seeds")
            elif NOT_IN_SEEDS in entry.definition:
                if in_seeds:
                    problems.append(f"{entry.key}: says it is not in the seeds, but is")
            else:
                problems.append(f"{entry.key}: no Chinese term and no note saying why")
    assert problems == [], "\n".join(problems)


def test_every_term_role_names_an_entry():
    unknown = [
        f"{path.name}: {target!r}"
        for path, found in LINKS.items()
        for entry, target, _ in found
        if entry is None
    ]
    assert unknown == [], "{term} roles with no glossary entry:\n" + "\n".join(unknown)


def linked_from(entry: Entry, pages=PAGES) -> list[Path]:
    return [p for p in pages if any(e is entry for e, _, _ in LINKS[p])]


def test_every_entry_is_linked_from_a_chapter():
    keys = {e.key for e in ENTRIES}
    assert set(AWAITING_CHAPTER_LINK) <= keys and APPENDIX_ONLY <= keys
    missing = []
    for entry in ENTRIES:
        in_chapters = linked_from(entry, CHAPTERS)
        if entry.key in APPENDIX_ONLY:
            assert not in_chapters, (
                f"{entry.key}: now linked from a chapter; drop it from APPENDIX_ONLY"
            )
            assert linked_from(entry, APPENDIX_PAGES), (
                f"{entry.key}: linked from nowhere"
            )
        elif not in_chapters and entry.key not in AWAITING_CHAPTER_LINK:
            missing.append(entry.key)
    assert missing == [], f"entries no chapter links to: {missing}"


def test_awaiting_entries_are_used_where_the_glossary_says():
    for key, (stem, word) in AWAITING_CHAPTER_LINK.items():
        entry = next(e for e in ENTRIES if e.key == key)
        chapter = ROOT / "chapters" / f"{stem}.ipynb"
        if not chapter.exists():
            pytest.fail(f"{key}: {chapter.name} does not exist")
        assert chapter not in linked_from(entry), (
            f"{key}: {chapter.name} links it now; drop it from AWAITING_CHAPTER_LINK"
        )
        assert word_sections(chapter, word), (
            f"{key}: {chapter.name} does not use {word!r}"
        )


def word_sections(path: Path, word: str) -> list[str]:
    """Section labels of every place where `word` occurs in the page's markdown."""
    cells = page_markdown(path)
    pattern = re.compile(rf"(?<![\w-]){re.escape(word)}", re.I)
    return [
        section_before(cells, i, match.start())
        for i, text in enumerate(cells)
        for match in pattern.finditer(text)
    ]


def test_first_use_is_the_first_link_in_book_order():
    for entry in ENTRIES:
        match = FIRST_USE.search(entry.definition)
        assert match, (
            f"{entry.key}: definition must end with 'First use: [page](link) ...'"
        )
        target = page_of(match.group(1))
        assert target.exists(), f"{entry.key}: {match.group(1)} does not exist"
        label = match.group(2) or match.group(3) or ""
        linked = linked_from(entry)
        if entry.key in AWAITING_CHAPTER_LINK:
            stem = AWAITING_CHAPTER_LINK[entry.key][0]
            assert target.stem == stem, (
                f"{entry.key}: first use is {stem}, says {target.name}"
            )
            earlier = [p.name for p in linked if PAGES.index(p) < PAGES.index(target)]
            assert earlier == [], (
                f"{entry.key}: linked before its first use in {earlier}"
            )
            word = AWAITING_CHAPTER_LINK[entry.key][1]
            used_in = word_sections(target, word)
            assert label in used_in, (
                f"{entry.key}: 'First use' says {label or 'no section'}, but "
                f"{target.name} uses {word!r} only in {sorted(set(used_in))}"
            )
            continue
        assert linked, f"{entry.key}: linked from no page"
        assert target == linked[0], (
            f"{entry.key}: 'First use' says {target.name}, first link is in {linked[0].name}"
        )
        first_section = next(s for e, _, s in LINKS[target] if e is entry)
        if target.suffix == ".ipynb":
            assert label == first_section, (
                f"{entry.key}: 'First use' says {label}, the link is in {first_section}"
            )


def test_a_chapter_links_an_entry_once():
    for path in CHAPTERS:
        keys = [e.key for e, _, _ in LINKS[path] if e is not None]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        assert twice == [], f"{path.name} links these more than once: {twice}"


# Terms the later chapters build on, which the glossary must keep (it once covered only
# the seeds' vocabulary). Each must be a term of some entry, not just a word in one.
CHAPTER_TERMS = (
    "quantization", "KV cache", "router", "capacity factor", "RAG", "WEAT", "exposure",
    "logit lens", "integrated gradients", "speculative decoding", "beam search",
    "top-p sampling", "LoRA", "prefix tuning", "DPO", "chrF", "BLEU", "perplexity",
    "bits per byte", "contamination", "MoE", "expert parallelism",
    "continuous batching", "byte-pair encoding", "scaling law", "instruction tuning",
)  # fmt: skip


def test_chapter_terms_have_entries():
    missing = [term for term in CHAPTER_TERMS if term.lower() not in BY_TERM]
    assert missing == [], f"no glossary entry for {missing}"
