"""Every chapter exercise can be assigned: difficulty, time, and a solution that runs.

Instructors assign the exercises at the end of each chapter, so each item of the
"## Exercises" list must carry

* a difficulty (easy / medium / hard, or one to three stars),
* an estimated time ("15 min", "1 h"), and
* a worked solution in a collapsed ``:::{dropdown} Solution`` block.

Every fenced ``python`` block inside a Solution dropdown is executed in a fresh
subprocess (a fresh namespace, the repository's interpreter, OMP_NUM_THREADS=1) and must
finish without error in ``BLOCK_TIMEOUT_S`` seconds. A block that only makes sense
inside the chapter (it uses the chapter's variables) starts with the line
``# needs: chapter context`` and is skipped with that reason; a block that trains or
evaluates for more than a minute on one core starts with ``# long:`` and a phrase saying
what takes the time, and is skipped too (run it by hand). Keep both kinds few.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
CONTEXT_MARK = "# needs: chapter context"
LONG_MARK = "# long:"
BLOCK_TIMEOUT_S = 120  # generous: a block should take < 30 s on one loaded core

DIFFICULTY = re.compile(r"\b(easy|medium|hard)\b|★", re.IGNORECASE)
TIME = re.compile(r"\b\d+(?:[-–]\d+)?\s*(?:min|minutes|h|hours?)\b")
ITEM = re.compile(r"^(\d+)\.\s", re.MULTILINE)
DROPDOWN = re.compile(
    r"^[ \t]*:::\{dropdown\}\s*Solution\b(.*?)^[ \t]*:::[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
FENCE = re.compile(
    r"^([ \t]*)```python[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL
)


def exercises_text(path: Path) -> str:
    """The markdown of the chapter's "## Exercises" section (up to the next H2)."""
    nb = nbformat.read(path, as_version=4)
    md = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    m = re.search(r"^## Exercises[ \t]*$(.*?)(?=^## |\Z)", md, re.MULTILINE | re.DOTALL)
    return m.group(1) if m else ""


def exercise_items(text: str) -> list[tuple[int, str]]:
    """(number, text) of each top-level numbered item; an item runs to the next one.

    The trailing paragraph after the last item (the link to the lab) is not indented,
    so the last item stops at the first unindented line outside a ``:::`` block.
    """
    starts = list(ITEM.finditer(text))
    items = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        body = text[m.start() : end]
        if i + 1 == len(starts):  # cut the unindented closing paragraph
            lines = body.splitlines()
            keep, in_block = [lines[0]], False
            for line in lines[1:]:
                if line.lstrip().startswith(":::{"):
                    in_block = True
                elif line.strip() == ":::":
                    in_block = False
                elif line and not line[0].isspace() and not in_block:
                    break
                keep.append(line)
            body = "\n".join(keep)
        items.append((int(m.group(1)), body))
    return items


def solution_blocks(path: Path) -> list[tuple[str, str]]:
    """(id, code) of every python block inside a Solution dropdown of the chapter."""
    blocks = []
    for number, item in exercise_items(exercises_text(path)):
        for d in DROPDOWN.finditer(item):
            for k, f in enumerate(FENCE.finditer(d.group(1))):
                code = textwrap.dedent(f.group(2))
                blocks.append((f"{path.stem}-ex{number}-{k + 1}", code))
    return blocks


def test_parsers_on_a_sample():
    sample = textwrap.dedent("""
        1. **A** (easy, 10 min). Do it.

           :::{dropdown} Solution
           ```python
           print(1)
           ```
           :::

        2. **B** (hard). No solution.

        3. **C** (easy, 5 min). A solution written flush left.

        :::{dropdown} Solution
        Text at column 0.
        :::

        Next: the lab.
        """)
    items = exercise_items(sample)
    assert [n for n, _ in items] == [1, 2, 3]
    assert "Next: the lab" not in items[2][1]
    assert DROPDOWN.search(items[2][1]) and "Text at column 0" in items[2][1]
    assert DROPDOWN.search(items[0][1]) and not DROPDOWN.search(items[1][1])
    assert TIME.search(items[0][1]) and not TIME.search(items[1][1])
    code = [textwrap.dedent(f.group(2)) for f in FENCE.finditer(items[0][1])]
    assert code == ["print(1)\n"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_is_assignable(path):
    items = exercise_items(exercises_text(path))
    assert items, f"{path.name}: no numbered items under '## Exercises'"
    problems = []
    for number, item in items:
        head = item.split(":::{dropdown}")[0]
        if not DIFFICULTY.search(head):
            problems.append(f"exercise {number}: no difficulty (easy/medium/hard)")
        if not TIME.search(head):
            problems.append(f"exercise {number}: no estimated time (e.g. '15 min')")
        if not DROPDOWN.search(item):
            problems.append(f"exercise {number}: no ':::{{dropdown}} Solution' block")
    assert not problems, f"{path.name}: " + "; ".join(problems)


ALL_BLOCKS = [(bid, code) for p in CHAPTERS for bid, code in solution_blocks(p)]


@pytest.mark.parametrize(
    "code", [c for _, c in ALL_BLOCKS], ids=[b for b, _ in ALL_BLOCKS]
)
def test_solution_code_runs(code, tmp_path):
    if code.lstrip().startswith(CONTEXT_MARK):
        pytest.skip("uses the chapter's variables (" + CONTEXT_MARK + ")")
    if code.lstrip().startswith(LONG_MARK):
        pytest.skip("runs for minutes: " + code.lstrip().splitlines()[0])
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"solution block failed:\n{code}\n--- stderr ---\n" + proc.stderr[-3000:]
    )
