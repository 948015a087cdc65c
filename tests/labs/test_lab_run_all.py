"""*Run all* on an untouched student lab reaches every `grader.check`.

A student who opens a lab and runs it from the top, before answering anything, must
see every check report its failures, not a traceback in the first "Try it" cell that
stops the run. Demo cells are guarded: tagged `demo` in the master, so that
tools/build_labs.py wraps them in the student copy (see `build_labs.guard_demo`), or
wrapped in try/except in the master itself. Here every generated notebook in labs/ runs
as handed out, in a kernel whose working directory is empty (as on Colab): no cell up
to the last `grader.check` may raise, and every check cell must have run and reported.
(An ungraded part after the last check may still stop on an unfinished answer.) The last test checks the wrapper itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_labs  # noqa: E402

LABS = sorted((ROOT / "labs").glob("lab*.ipynb"))


def params():
    for lab in LABS:
        yield pytest.param(lab, id=lab.stem)


@pytest.mark.parametrize("lab", list(params()))
def test_untouched_lab_runs_to_every_check(lab, tmp_path):
    nb = nbformat.read(lab, as_version=4)
    checks = [c for c in nb.cells if c.source.startswith("grader.check(")]
    assert checks, f"{lab.name} has no grader.check cells"
    empty = tmp_path / "content"
    empty.mkdir()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,  # checked below: no error before the last check
        resources={"metadata": {"path": str(empty)}},
    ).execute()
    last = max(
        i for i, c in enumerate(nb.cells) if c.source.startswith("grader.check(")
    )
    for cell in nb.cells[: last + 1]:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{lab.name}: a cell before the last check raised:\n" + (
            f"{cell.source[:300]}\n{errors[0].get('ename')}: {errors[0].get('evalue')}"
        )
    for cell in checks:
        assert cell.execution_count is not None, f"{cell.source} did not run"
        shown = "".join(
            o.get("data", {}).get("text/plain", "") + o.get("text", "")
            for o in cell.outputs
        )
        assert "failed" in shown or "passed" in shown, (cell.source, shown)


def test_demo_guard_prints_instead_of_raising():
    source = "x = make()\nlen(x),\\\n    x[0]"
    guarded = build_labs.guard_demo(source)
    assert "    display((len(x),\\\n        x[0]))" in guarded, guarded
    shown = []
    namespace = {"make": lambda: None, "display": shown.append, "print": shown.append}
    exec(compile(guarded, "<demo>", "exec"), namespace)  # `...` answers return None
    assert len(shown) == 1 and shown[0].startswith("Try it skipped"), shown
    shown.clear()
    namespace["make"] = lambda: [5, 6]
    exec(compile(guarded, "<demo>", "exec"), namespace)
    assert shown == [(2, 5)], "a working answer shows the demo's last expression"
