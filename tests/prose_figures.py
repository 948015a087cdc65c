"""Numbers in a chapter's prose must come from that chapter's executed outputs.

A chapter's markdown states measured numbers ("MiniLM puts a relevant chunk first for
54.1% of the 135 questions"). The chapters are stored without outputs and executed by
tests/chapters/test_notebooks_execute.py; after each run, :func:`unbound_figures` lists every
figure of the prose (up to the exercises) that no output of that run shows, and the
test fails on any. So retraining a model, or changing a seed, either leaves the prose
true or fails the test; the prose stays plain text, readable in Colab as in the book.

What counts as a figure: every number in running text, outside code, math, roles
(``{cite}``, ``{term}``), links and headings, with its decimals, an optional ``%``
(matched against an output of ``x`` or ``x / 100``) and thousands separators. A figure
matches an output number when the output, rounded to the figure's decimals, equals it.
Numbers that are not results of the run (a window of 128 tokens, "Chapter 7", a seed
section, a published figure with its citation) are listed per chapter in
tests/data/prose_figures.yml, with no entry that the prose does not use.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = ROOT / "tests" / "data" / "prose_figures.yml"

_RANGE = r"[\d.]+(?:\s?[–-]\s?[\d.]+)?"  # 2.1 or 2.1–2.4
_FENCE = re.compile(r"^(`{3,}|:{3,}).*?^\1\s*$", re.S | re.M)
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
_INLINE_MATH = re.compile(r"\$[^$\n]+\$")
_STRIP = [
    re.compile(r"\{[a-z:]+\}`[^`]*`"),  # roles: {cite}`x`, {term}`y`, {doc}`z`
    re.compile(r"`[^`\n]*`"),  # code spans
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"^#{1,6} .*$", re.M),  # headings: section numbers
    re.compile(r"^\s*:\w+:.*$", re.M),  # directive options
    re.compile(rf"\b(?:00[0-4]|seed) §{_RANGE}(?:[, ]+§?{_RANGE})*"),  # seed sections
    re.compile(rf"§\s?{_RANGE}"),  # section references (and ranges)
    re.compile(
        r"\b(?:Chapters?|Labs?|Sections?|Exercises?|Figure|Table|Step)"
        r" \d+(?:\.\d+)*(?:\s*(?:–|-|and|,)\s*\d+)*"
    ),  # fmt: skip
]
_STATED = re.compile(r"(?:=|\\approx)\s*([-−]?\d+(?:\.\d+)?)(?![\w.^{])(?!\s*\\times)")
_NUMBER = re.compile(r"(?<![\w.])[-−+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|"
                     r"(?<![\w.])[-−+]?\d+(?:\.\d+)?%?(?![\w])")  # fmt: skip
_OUTPUT_NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def chapter_prose(notebook) -> list[tuple[int, str]]:
    """(cell index, text) of the markdown cells before the exercises."""
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        text = cell.source
        if re.search(r"^## Exercises", text, re.M):
            cells.append(
                (index, text[: re.search(r"^## Exercises", text, re.M).start()])
            )
            break
        cells.append((index, text))
    return cells


def prose_figures(markdown: str) -> list[str]:
    """The figures of one markdown text, as written (e.g. ``"54.1%"``, ``"2,590"``)."""
    text = _FENCE.sub(" ", markdown)
    text = _DISPLAY_MATH.sub(" ", text)
    # in inline math, only a value stated after "=" or "\\approx" ($d = 1.24$) counts
    text = _INLINE_MATH.sub(
        lambda m: " " + " ".join(_STATED.findall(m.group(0))) + " ", text
    )
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    return [m.group(0).lstrip("+") for m in _NUMBER.finditer(text)]


def _value(figure: str) -> tuple[float, int]:
    digits = figure.rstrip("%").replace(",", "").replace("−", "-")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return float(digits), decimals


def output_numbers(notebook) -> list[float]:
    """Every number printed or displayed as text by the executed notebook."""
    numbers = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text = out.text
            elif out.output_type in ("execute_result", "display_data"):
                text = out.get("data", {}).get("text/plain", "")
            else:
                continue
            for m in _OUTPUT_NUMBER.finditer(text):
                numbers.append(float(m.group(0).replace(",", "")))
    return numbers


def matches(figure: str, numbers: list[float]) -> bool:
    value, decimals = _value(figure)
    scales = (1.0, 100.0) if figure.endswith("%") else (1.0,)
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(
        abs(abs(x * s) - abs(value)) <= tolerance for x in numbers for s in scales
    )


def _table() -> dict:
    return yaml.safe_load(ALLOWED.read_text()) or {}


def bound_chapters() -> set[str]:
    """The chapters (notebook stems) whose prose figures are checked."""
    return set(_table())


def allowed(chapter: str) -> set[str]:
    table = _table()
    return {str(x) for x in (table.get(chapter) or {}).get("not_from_the_run", [])}


def unbound_figures(notebook, chapter: str) -> list[tuple[int, str]]:
    """(cell index, figure) for every prose figure that no output shows."""
    numbers, ok = output_numbers(notebook), allowed(chapter)
    return [
        (index, figure)
        for index, text in chapter_prose(notebook)
        for figure in prose_figures(text)
        if figure not in ok and not matches(figure, numbers)
    ]


def unused_allowances(notebook, chapter: str) -> set[str]:
    """Entries of the chapter's list that its prose no longer contains."""
    used = {f for _, text in chapter_prose(notebook) for f in prose_figures(text)}
    return allowed(chapter) - used
