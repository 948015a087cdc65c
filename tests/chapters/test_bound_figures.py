"""The checker that binds prose figures to executed outputs (tests/prose_figures.py).

The binding itself runs in tests/chapters/test_notebooks_execute.py, after each chapter
executes; here: the extractor and the matcher on made-up cells, and the per-chapter
lists of numbers that are not results (each entry must still occur in the prose).
"""

from __future__ import annotations

import random

import nbformat
import pytest
from prose_figures import (
    ROOT,
    bound_chapters,
    matches,
    prose_figures,
    unbound_figures,
    unused_allowances,
)


def test_figures_are_found_in_running_text_only():
    text = (
        "MiniLM finds 54.1% of the 135 questions (Chapter 7, §1.4–1.5, 002 §6.1–6.3) and "
        "chrF moves by -2.5 to +3.6 over 2,590 chunks {cite}`lewis2020rag`.\n"
        "## 3. Code `x = 0.25` and $e^{0.5}$\n```python\nprint(0.999)\n```\n"
    )
    assert prose_figures(text) == ["54.1%", "135", "-2.5", "3.6", "2,590"]


def test_rounding_percent_and_separators():
    rng = random.Random(0)
    for _ in range(200):
        x = rng.uniform(0, 1)
        assert matches(f"{x:.3f}", [x])
        assert matches(f"{100 * x:.1f}%", [x])  # a share printed as a fraction
        assert not matches(f"{x + 0.002:.3f}", [x])
    assert matches("2,590", [2590.0]) and not matches("2,590", [2591.0])
    assert matches("-2.5", [-2.46]) and not matches("-2.5", [-2.44])


def _notebook(prose, printed):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    nb.cells = [cell, nbformat.v4.new_markdown_cell(prose),
                nbformat.v4.new_markdown_cell("## Exercises\nExpect about 0.9.")]  # fmt: skip
    return nb


def test_a_changed_output_fails_the_binding():
    prose = "Recall@1 is 0.541 on 135 questions."
    assert unbound_figures(_notebook(prose, "recall@1 0.541 of 135\n"), "none") == []
    assert unbound_figures(_notebook(prose, "recall@1 0.533 of 135\n"), "none") == [
        (1, "0.541")
    ]


@pytest.mark.parametrize("chapter", sorted(bound_chapters()))
def test_allowances_are_used_by_the_prose(chapter):
    notebook = nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)
    assert not unused_allowances(notebook, chapter)
