"""Core-seconds per correct submission graded by llmbook-grade, sandbox included.

Builds a lab's autograder zip and student notebook with the master's answers filled
in, grades N copies one after another, and prints per-submission wall time and CPU,
all in: the grader's own CPU (reading, integrity flags, sandbox start-up, scoring)
and that of the processes it reaped (bubblewrap), plus what the harness reports of
itself and of the processes it started (inside the sandbox's PID namespace, its time
does not reach the grader's counters). Usage::

    python benchmarks/grading_throughput.py --lab lab02_attention -n 5
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def answered(master: Path, student: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student notebook with the master's solution cells pasted in."""
    sources, inside = [], False
    for cell in nbformat.read(master, as_version=4).cells:
        text = cell.source.strip()
        if cell.cell_type == "raw" and text.startswith("# BEGIN SOLUTION"):
            inside = True
        elif cell.cell_type == "raw" and text.startswith("# END SOLUTION"):
            inside = False
        elif inside and cell.cell_type == "code":
            sources.append(cell.source)
    nb = copy.deepcopy(student)
    cells = [c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", [])]
    for cell, source in zip(cells, sources, strict=True):
        cell.source = source
    return nb


def main(argv: list[str] | None = None) -> int:
    import build_labs

    from llmbook.grading import bundle, integrity, runner, sandbox, scoring
    from llmbook.grading.notebook import read_submission

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab02_attention")
    parser.add_argument("-n", type=int, default=5, help="submissions to grade")
    parser.add_argument("--unsafe-no-sandbox", action="store_true")
    args = parser.parse_args(argv)
    if not args.unsafe_no_sandbox:
        sandbox.check_sandbox()
    master = ROOT / "solutions" / f"{args.lab}.ipynb"
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        built = build_labs.build_lab(master, Path(tmp))
        student = nbformat.reads(built.files[master.name].decode(), as_version=4)
        path = Path(tmp, "submission.ipynb")
        nbformat.write(answered(master, student), path)
        b = bundle.load_bundle(built.autograder_zip)
        walls, cpus, harness = [], [], []
        params = {
            q: sorted({p for t in tests for p in t.params})
            for q, tests in b.tests.items()
        }
        for _ in range(args.n):
            start, before = time.monotonic(), os.times()
            sub = read_submission(path)
            integrity.integrity_flags(sub.cells, b.lab, params)
            exports = runner.run_job(
                b,
                sub.cells,
                sub.anchors(list(b.questions)),
                unsafe=args.unsafe_no_sandbox,
                timeout=300,
            )
            total = sum(
                scoring.score_question(
                    b, q, exports.questions.get(q), exports.stores.get(q)
                ).score
                for q in b.questions
            )
            after = os.times()
            if total != sum(b.questions.values()) or exports.cpu_s is None:
                raise SystemExit(f"the solution scored {total}: {exports.problem}")
            spent = [a - b for a, b in zip(after[:4], before[:4], strict=True)]
            walls.append(time.monotonic() - start)
            cpus.append(sum(spent) + exports.cpu_s)
            harness.append(exports.cpu_s)
    mode = "without sandbox" if args.unsafe_no_sandbox else "sandboxed"
    print(f"{args.lab}, {args.n} correct submissions, {mode}, one at a time:")
    print(
        f"  wall  {sum(walls) / len(walls):.2f} s per submission (min {min(walls):.2f})"
    )
    print(
        f"  CPU   {sum(cpus) / len(cpus):.2f} core-s per submission, all in "
        f"(min {min(cpus):.2f}); the harness alone {sum(harness) / len(harness):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
