"""Bulk grading of lab submissions with otter-grader, without Docker.

Usage (the ``llmbook-grade`` console script runs the same ``main``)::

    python -m llmbook.grading --autograder _build/autograder/lab02_attention.zip \\
        --submissions submissions/ --out grades.csv

Every ``*.ipynb`` in the submissions folder is graded by ``otter run`` in a
subprocess of its own, with a timeout, against the autograder zip that ``make labs``
builds (public and hidden tests). ``otter grade`` would need Docker; ``otter run``
grades in the current environment, which must therefore have the course's packages
installed (it does when you use the course's ``.venv``).

The CSV gets one row per submission, written and flushed as soon as that submission
is done, so an interrupted run keeps every row it finished. A submission that cannot
be graded (not valid JSON, an infinite loop that hits the timeout, a crashed kernel)
becomes a row with status ``error`` and a message saying why; the others are graded
as usual.

Columns: ``file``, one column per question (points earned), ``total``, ``possible``,
``status`` (``ok`` or ``error``) and ``error`` (empty when the status is ``ok``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

__all__ = ["autograder_questions", "grade_notebook", "grade_submissions", "main"]

DEFAULT_TIMEOUT = 300.0  # seconds per submission; a correct lab runs in about 10
MAX_WORKERS = 2
MESSAGE_LIMIT = 300  # characters of an error message kept in the CSV


def _natural_key(name: str) -> list[int | str]:
    """Sort key that puts q2 before q10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _check_autograder(autograder: Path) -> None:
    if not autograder.is_file():
        raise FileNotFoundError(
            f"autograder zip not found: {autograder} (run `make labs`; the zips land in "
            "_build/autograder/)"
        )
    if not zipfile.is_zipfile(autograder):
        raise ValueError(f"{autograder} is not a zip file")
    with zipfile.ZipFile(autograder) as zf:
        if not any(n.startswith("tests/") and n.endswith(".py") for n in zf.namelist()):
            raise ValueError(
                f"{autograder} is not an otter autograder zip: it has no tests/*.py"
            )


def autograder_questions(autograder: str | Path) -> dict[str, float]:
    """Question name -> points possible, read from the autograder zip's tests."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    autograder = Path(autograder)
    _check_autograder(autograder)
    questions = {}
    with tempfile.TemporaryDirectory(prefix="llmbook-grade-") as tmp:
        with zipfile.ZipFile(autograder) as zf:
            names = [n for n in zf.namelist() if re.fullmatch(r"tests/[^/]+\.py", n)]
            zf.extractall(tmp, members=names)
        for name in sorted(names, key=_natural_key):
            test = create_test_file(str(Path(tmp, name)), NBMetadataConfig())
            # otter splits a question's points over its tests as floats; round the
            # sum back so that 3 points over 7 tests reads 3.0, not 2.9999999999999996
            questions[test.name] = round(float(test.possible), 4)
    return questions


def _short(message: str) -> str:
    """One line, at most MESSAGE_LIMIT characters."""
    message = " ".join(message.split())
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    return message


def _last_error_line(stderr: str) -> str:
    """The most telling line of a traceback: the last non-empty one."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    return lines[-1] if lines else "no error output"


def _error_row(file: str, questions: dict[str, float], message: str) -> dict:
    """A CSV row for a submission that could not be graded."""
    row: dict = {"file": file, **dict.fromkeys(questions, ""), "total": ""}
    row.update(possible=round(sum(questions.values()), 4), status="error")
    row["error"] = _short(message)
    return row


def _stop(proc: subprocess.Popen) -> None:
    """Kill `proc` and everything it started (otter starts a kernel)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)  # the process group made for it
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass
    proc.communicate()


def grade_notebook(
    autograder: str | Path,
    notebook: str | Path,
    questions: dict[str, float],
    timeout: float = DEFAULT_TIMEOUT,
) -> dict:
    """Grade one notebook with ``otter run``; never raises for a bad submission.

    Returns the CSV row: file, one score per question, total, possible, status, error.
    """
    import nbformat

    notebook = Path(notebook)
    try:
        nbformat.read(notebook, as_version=4)
    except Exception as exc:  # invalid JSON, not a notebook, unreadable file
        return _error_row(
            notebook.name,
            questions,
            f"not a readable notebook: {type(exc).__name__}: {exc}",
        )

    with tempfile.TemporaryDirectory(prefix="llmbook-grade-") as tmp:
        out, scratch = Path(tmp, "out"), Path(tmp, "tmp")
        out.mkdir()
        scratch.mkdir()
        cmd = [sys.executable, "-m", "otter", "run", "--no-logo"]
        cmd += ["--autograder", str(Path(autograder).resolve())]
        cmd += ["--output-dir", str(out), str(notebook.resolve())]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp,
            env={**os.environ, "TMPDIR": str(scratch)},  # otter's files die with tmp
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return _error_row(
                notebook.name,
                questions,
                f"timed out after {timeout:g} s (an infinite loop or a very slow cell?)",
            )
        results_path = out / "results.json"
        if proc.returncode != 0 or not results_path.is_file():
            return _error_row(
                notebook.name,
                questions,
                f"otter run failed (exit {proc.returncode}): {_last_error_line(stderr)}",
            )
        results = json.loads(results_path.read_text(encoding="utf-8"))

    tests = {t.get("name"): t for t in results.get("tests", [])}
    if "Autograder Failed" in tests or not any(q in tests for q in questions):
        detail = tests.get("Autograder Exception", {}).get("output", "").strip()
        return _error_row(
            notebook.name,
            questions,
            "otter could not collect results (did the notebook crash the kernel?) "
            + (detail.splitlines() or [""])[-1],
        )
    row: dict = {"file": notebook.name}
    for q in questions:
        row[q] = round(float(tests[q]["score"]), 4) if q in tests else 0.0
    row["total"] = round(sum(row[q] for q in questions), 4)
    row.update(possible=round(sum(questions.values()), 4), status="ok", error="")
    return row


def grade_submissions(
    autograder: str | Path,
    submissions: str | Path,
    out_csv: str | Path,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int = 1,
) -> list[dict]:
    """Grade every ``*.ipynb`` in ``submissions`` into ``out_csv``; return the rows.

    Rows are written (and flushed to disk) as each submission finishes; the returned
    list is sorted by file name. ``workers`` (1 or 2) notebooks are graded at a time.
    """
    autograder, submissions, out_csv = (
        Path(autograder),
        Path(submissions),
        Path(out_csv),
    )
    questions = autograder_questions(autograder)
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {submissions}")
    notebooks = sorted(submissions.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no .ipynb files to grade in {submissions}")
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")

    columns = ["file", *questions, "total", "possible", "status", "error"]
    rows = []
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(out_csv, "w", newline="", encoding="utf-8") as f,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        f.flush()
        futures = {
            pool.submit(grade_notebook, autograder, nb, questions, timeout): nb
            for nb in notebooks
        }
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as exc:  # a bug here must not lose the other rows
                row = _error_row(
                    futures[future].name,
                    questions,
                    f"grading crashed: {type(exc).__name__}: {exc}",
                )
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
            rows.append(row)
            print(f"{row['file']}: {row['status']} {row['total']}/{row['possible']}")
    return sorted(rows, key=lambda r: r["file"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llmbook-grade",
        description="Grade a folder of lab notebooks with otter run (no Docker).",
    )
    parser.add_argument(
        "--autograder", required=True, help="the lab's zip, _build/autograder/<lab>.zip"
    )
    parser.add_argument(
        "--submissions", required=True, help="folder of submitted .ipynb files"
    )
    parser.add_argument("--out", default="grades.csv", help="CSV to write")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per submission (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, MAX_WORKERS + 1),
        help="notebooks graded at once",
    )
    args = parser.parse_args(argv)
    try:
        rows = grade_submissions(
            args.autograder, args.submissions, args.out, args.timeout, args.workers
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"llmbook-grade: error: {exc}", file=sys.stderr)
        return 2
    errors = sum(r["status"] == "error" for r in rows)
    print(f"graded {len(rows)} notebook(s), {errors} error(s): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
