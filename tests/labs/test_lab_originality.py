"""Every graded lab answer asks for what the chapters do not print.

A lab question whose answer a student can paste from a chapter measures nothing. For
every otter master in solutions/ (today's and any added later) and every *graded
function*, a top-level ``def`` or ``class`` in a solution cell (the code cells between
the raw ``# BEGIN SOLUTION`` / ``# END SOLUTION`` cells), this test fails when

1. **the name** is one a chapter defines: any ``def`` or ``class`` at any depth of a
   chapter's code cells, dunder methods aside; or
2. **the code** mostly appears in one chapter cell: at least ``SHARE`` (60 %) of the
   answer's *normalised lines* occur among the normalised lines of a single chapter
   code cell.

The *answer* is what the student writes: the lines between the ``# BEGIN SOLUTION`` and
``# END SOLUTION`` comments inside the function or class (all of them, for a class
with several methods), or the whole definition where it has no such comments.
*Normalising* parses the code and replaces every identifier a programmer chooses
(variable, argument, function and class names, ``Name`` and ``arg`` nodes) by ``_``;
builtins (``range``, ``min``), the usual module aliases (``torch``, ``F``, ``math``),
attribute names, keywords, operators and literals stay. Docstrings are dropped. Each
statement is unparsed by ``ast.unparse`` and split into lines (so ``for ...:`` and
its body are separate lines); lines that carry no content of their own, made of
chosen names, keywords, operators and punctuation only (``def _(_, _):``,
``for _ in _:``, ``_ = _(_, _)``, ``_[_] += _``, ``return _``, ``else:``), are dropped on both sides, because they
would match any cell. The share is ``|answer lines found in the cell| / |answer lines|``,
counted with multiplicity on the answer's side. Answers of fewer than ``MIN_LINES``
normalised lines are judged by their name only: three lines of common idioms
(``_.append(_)``, ``for _ in range(_):``) match some chapter cell by chance.
"""

from __future__ import annotations

import ast
import builtins
import copy
import re
from functools import cache
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
MASTERS = sorted((ROOT / "solutions").glob("lab*.ipynb"))
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

SHARE = 0.60  # "most" of an answer: this share of its normalised lines in one cell
MIN_LINES = 4  # shorter answers are judged by their name only
# A line made of chosen names, keywords, operators and punctuation only (`def _(_, _):`,
# `for _ in _:`, `_ = _(_, _)`, `_[_] += _`, `return _`, `else:`) carries no content of
# its own.
TRIVIAL = re.compile(
    r"^(?:[\s_()\[\]{},:=.*+\-/%<>!&|^~@]|\b(?:def|class|for|in|return|if|elif|else|"
    r"not|and|or|del|"
    r"is|None|True|False|lambda|with|as|yield|while|try|except|finally|pass|break|"
    r"continue|self|super|__init__)\b)*$"
)
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
# Names nobody chooses, kept as they are: builtins and the usual module aliases.
KEPT_NAMES = frozenset(dir(builtins)) | {
    "torch", "nn", "F", "math", "np", "Counter", "defaultdict", "itertools",
}  # fmt: skip


def python_source(source: str) -> str:
    """Cell source with IPython magics and shell escapes commented out."""
    return "\n".join(
        "# " + line if line.lstrip().startswith(("%", "!")) else line
        for line in source.splitlines()
    )


class _Anonymise(ast.NodeTransformer):
    """Replace the names a programmer chooses by `_`; drop docstrings."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in KEPT_NAMES:
            return node
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg, node.annotation = "_", None
        return node

    def _body(self, node):
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name, node.returns, node.decorator_list = "_", None, []
        return self._body(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.generic_visit(node)
        node.name = "_"
        return self._body(node)


def normalised_lines(statements: list[ast.stmt]) -> list[str]:
    """The statements' normalised, non-trivial lines (see the module docstring)."""
    module = _Anonymise().visit(ast.Module(body=statements, type_ignores=[]))
    ast.fix_missing_locations(module)
    lines = [line.strip() for line in ast.unparse(module).splitlines()]
    return [line for line in lines if line and not TRIVIAL.match(line)]


@cache
def chapter_trees() -> list[tuple[str, int, ast.Module]]:
    """(chapter, cell index, parsed source) of every chapter code cell that parses."""
    trees = []
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                trees.append((path.name, index, ast.parse(python_source(cell.source))))
            except SyntaxError:
                continue
    return trees


@cache
def chapter_cells() -> list[tuple[str, int, frozenset[str]]]:
    """(chapter, cell index, normalised lines) of every chapter code cell
    (normalising rewrites the tree, so it works on a copy)."""
    return [
        (chapter, index, frozenset(normalised_lines(copy.deepcopy(tree.body))))
        for chapter, index, tree in chapter_trees()
    ]


@cache
def chapter_names() -> dict[str, str]:
    """Name of every def/class in the chapters -> the first chapter defining it."""
    names: dict[str, str] = {}
    for chapter, _index, tree in chapter_trees():
        for node in ast.walk(tree):
            if isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            ) and not (node.name.startswith("__") and node.name.endswith("__")):
                names.setdefault(node.name, chapter)
    return names


def solution_cells(master: Path) -> list[str]:
    """Code cells between the raw `# BEGIN SOLUTION` and `# END SOLUTION` cells."""
    nb = nbformat.read(master, as_version=4)
    cells, inside = [], False
    for cell in nb.cells:
        text = cell.source.strip()
        if cell.cell_type == "raw" and text.startswith(BEGIN):
            inside = True
        elif cell.cell_type == "raw" and text.startswith(END):
            inside = False
        elif inside and cell.cell_type == "code":
            cells.append(python_source(cell.source))
    return cells


def answer_statements(
    node: ast.stmt, source_lines: list[str], last: int | None = None
) -> list[ast.stmt]:
    """The statements of `node` between its solution markers (all of it if none).

    `last`: the last source line that belongs to `node` (its closing marker comment
    may follow its last statement); by default the end of the source.
    """
    first, last = node.lineno, len(source_lines) if last is None else last
    spans, start = [], None
    for number in range(first, last + 1):
        text = source_lines[number - 1].strip()
        if text.startswith(BEGIN):
            start = number
        elif text.startswith(END) and start is not None:
            spans.append((start, number))
            start = None
    if not spans:
        return [node]
    inside = [
        child
        for child in ast.walk(node)
        if isinstance(child, ast.stmt)
        and child is not node
        and any(a < child.lineno and child.end_lineno < b for a, b in spans)
    ]
    contained = {id(g) for child in inside for g in ast.walk(child) if g is not child}
    return [child for child in inside if id(child) not in contained]


def graded_answers(master: Path) -> list[tuple[str, list[str]]]:
    """(name, normalised answer lines) of every graded function or class."""
    answers = []
    for source in solution_cells(master):
        tree = ast.parse(source)
        lines = source.splitlines()
        ends = [n.lineno - 1 for n in tree.body[1:]] + [len(lines)]
        for node, last in zip(tree.body, ends, strict=True):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                statements = answer_statements(node, lines, last)
                answers.append((node.name, normalised_lines(statements)))
    return answers


def best_match(lines: list[str]) -> tuple[float, str]:
    """The largest share of `lines` found in one chapter cell, and where."""
    best, where = 0.0, ""
    for chapter, index, cell_lines in chapter_cells():
        share = sum(line in cell_lines for line in lines) / len(lines)
        if share > best:
            best, where = share, f"{chapter} cell {index}"
    return best, where


def overlaps(master: Path) -> list[str]:
    """Every graded answer of `master` that a chapter already prints."""
    found = []
    names = chapter_names()
    for name, lines in graded_answers(master):
        if name in names:
            found.append(f"{name}: {names[name]} defines a function of that name")
        if len(lines) >= MIN_LINES:
            share, where = best_match(lines)
            if share >= SHARE:
                found.append(
                    f"{name}: {share:.0%} of its {len(lines)} normalised lines are in "
                    f"{where}"
                )
    return found


def params():
    for master in MASTERS:
        yield pytest.param(master, id=master.stem)


@pytest.mark.parametrize("master", list(params()))
def test_no_graded_answer_is_printed_in_a_chapter(master):
    assert graded_answers(master), f"{master.name}: no graded function found"
    found = overlaps(master)
    assert not found, (
        f"{master.name}: graded answers the chapters print:\n" + "\n".join(found)
    )


# --- the detector itself -------------------------------------------------------------


def test_normalising_ignores_names_and_docstrings():
    a = ast.parse(
        'def f(x, n):\n    """Doc."""\n    total = x.sum() / n\n    return total'
    )
    b = ast.parse("def g(y, m):\n    s = y.sum() / m\n    return s")
    assert normalised_lines(a.body) == normalised_lines(b.body)
    c = ast.parse("def g(y, m):\n    s = y.mean() / m\n    return s")
    assert normalised_lines(a.body) != normalised_lines(c.body), "attributes count"


def test_answer_is_the_code_between_the_markers():
    source = (
        "def f(x):\n"
        "    y = x + 1  # given\n"
        "    # BEGIN SOLUTION\n"
        "    z = y * 2\n"
        "    for i in range(3):\n"
        "        z = z + i\n"
        "    # END SOLUTION\n"
        "    return z\n"
    )
    [node] = ast.parse(source).body
    got = normalised_lines(answer_statements(node, source.splitlines()))
    assert got == ["_ = _ * 2", "for _ in range(3):"]  # `_ = _ + _` is no content


def test_a_pasted_chapter_cell_is_caught(tmp_path):
    """A chapter's function, renamed and pasted as an answer, fails the test."""
    for chapter, index, _lines in chapter_cells():
        nb = nbformat.read(ROOT / "chapters" / chapter, as_version=4)
        tree = ast.parse(python_source(nb.cells[index].source))
        defs = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
        if defs and len(normalised_lines(defs[:1])) >= 2 * MIN_LINES:
            break
    else:
        raise AssertionError("no chapter defines a function of some length")
    defs[0].name = "renamed_answer"
    master = nbformat.v4.new_notebook()
    master.cells = [
        nbformat.v4.new_raw_cell(BEGIN),
        nbformat.v4.new_code_cell(ast.unparse(defs[0])),
        nbformat.v4.new_raw_cell(END),
    ]
    path = tmp_path / "lab99_pasted.ipynb"
    nbformat.write(master, path)
    found = overlaps(path)
    assert any(
        f.startswith("renamed_answer:") and "normalised lines" in f for f in found
    ), found
