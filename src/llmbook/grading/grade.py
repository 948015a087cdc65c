"""Grading a folder: one sandboxed run per notebook, scored on the trusted side."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbook.grading import bundle as bundles
from llmbook.grading import integrity, mounts, report, runner, sandbox, scoring
from llmbook.grading.notebook import SubmissionError, read_submission, sha256_file

__all__ = ["GradeOptions", "grade_notebook", "grade_submissions"]

MAX_WORKERS = 2


@dataclass
class GradeOptions:
    timeout: float = 300.0
    workers: int = 1
    lab: str | None = None  # the lab named on the command line
    unsafe: bool = False  # --unsafe-no-sandbox
    limits: sandbox.Limits | None = None


@dataclass
class Graded:
    row: dict[str, Any]
    results: list[scoring.QuestionResult] = field(default_factory=list)
    cell_errors: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    note: str = ""  # why the run stopped early, in the grader's words (feedback)


def _lab_matches(name: str, lab: str) -> bool:
    return name == lab or lab.startswith(name + "_") or name.startswith(lab + "_")


def _error_row(file: str, b: bundles.Bundle, message: str, digest: str = "") -> dict:
    """A row for a file that could not be graded; `message` is the grader's own."""
    row: dict[str, Any] = {"file": file, **dict.fromkeys(b.questions, ""), "total": ""}
    row.update(
        possible=round(sum(b.questions.values()), 4),
        status="error",
        flags="",
        error=report.short(message),
        sha256=digest,
    )
    return row


def grade_notebook(b: bundles.Bundle, path: Path, options: GradeOptions) -> Graded:
    """Grade one file; never raises for a bad submission."""
    try:
        sub = read_submission(path)
    except SubmissionError as exc:
        return Graded(_error_row(path.name, b, str(exc), _hash(path) or ""))
    if sub.lab and not _lab_matches(sub.lab, b.lab):
        return Graded(
            _error_row(
                path.name,
                b,
                f"this notebook is {report.clean(sub.lab)[:80]} (its otter metadata), "
                f"but the autograder is {b.lab}: grade it with that lab's zip",
                sub.sha256,
            )
        )
    params = {
        q: sorted({p for t in tests for p in t.params}) for q, tests in b.tests.items()
    }
    try:
        with mounts.AST_LOCK:
            flags = integrity.integrity_flags(sub.cells, b.lab, params)
    except (RecursionError, MemoryError, ValueError):
        flags = ["notebook: code too large or too deep to analyse"]
    exports = runner.run_job(
        b,
        sub.cells,
        sub.anchors(list(b.questions)),
        mode="grade",
        unsafe=options.unsafe,
        timeout=options.timeout,
        limits=options.limits,
    )
    with mounts.AST_LOCK:
        results = [
            scoring.score_question(
                b, q, exports.questions.get(q), exports.stores.get(q)
            )
            for q in b.questions
        ]
    row: dict[str, Any] = {"file": path.name}
    for result in results:
        row[result.name] = result.score
    row["total"] = round(sum(r.score for r in results), 4)
    row["possible"] = round(sum(b.questions.values()), 4)
    row["status"] = "ok" if exports.problem is None else "incomplete"
    row["flags"] = "; ".join(flags)
    error = exports.problem or ""
    feedback_note = error  # the grader's own words only
    if not sub.lab:
        note = f"no otter metadata: graded as {b.lab}"
        error = f"{error}; {note}" if error else note
    if exports.detail:  # what the sandbox said: for the instructor (CSV) only
        error = f"{error} [the notebook said: {exports.detail}]"
    row["error"] = report.short(error)
    row["sha256"] = sub.sha256
    return Graded(row, results, exports.cell_errors, flags, feedback_note)


def _submissions(folder: Path) -> list[Path]:
    """Every entry named ``*.ipynb`` that is not a folder, links included (they get
    an error row), sorted by name. Nothing is followed or opened here."""
    found = []
    for p in folder.iterdir():
        if p.suffix.lower() != ".ipynb":
            continue
        try:
            if stat.S_ISDIR(os.lstat(p).st_mode):
                continue
        except OSError:
            pass
        found.append(p)
    return sorted(found, key=lambda p: p.name)


def _hash(path: Path) -> str | None:
    """sha256 of a regular file; None for anything else (never read)."""
    try:
        return sha256_file(path)
    except (OSError, SubmissionError):
        return None


def grade_submissions(
    autograder: str | Path,
    submissions: str | Path,
    out_csv: str | Path,
    options: GradeOptions | None = None,
) -> list[dict[str, Any]]:
    """Grade every ``*.ipynb`` in `submissions` into `out_csv`; return the rows.

    The CSV is rewritten (sorted by file name, atomically) after each notebook, so an
    interrupted run keeps what it finished; a feedback report per notebook goes to
    ``<out_csv stem>_feedback/``. Raises BundleError, SandboxUnavailable,
    FileNotFoundError or ValueError before grading anything when it cannot start.
    """
    options = options or GradeOptions()
    autograder, submissions, out_csv = (
        Path(autograder),
        Path(submissions),
        Path(out_csv),
    )
    b = bundles.load_bundle(autograder)
    if options.lab and not _lab_matches(options.lab, b.lab):
        raise ValueError(
            f"--lab {options.lab} does not match the autograder's lab {b.lab}"
        )
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {submissions}")
    files = _submissions(submissions)
    if not files:
        raise ValueError(f"no .ipynb files to grade in {submissions}")
    if not 1 <= options.workers <= MAX_WORKERS:
        raise ValueError(
            f"workers must be between 1 and {MAX_WORKERS}, got {options.workers}"
        )
    if not options.unsafe:
        sandbox.check_sandbox()
        sandbox.check_roots_exclude(
            mounts.readable_roots(), [autograder, submissions, out_csv.parent]
        )
    # the tests' ASTs, parsed once here before the worker threads start
    with mounts.AST_LOCK:
        _ = (b.sites, b.plans)
    zip_hash = _hash(autograder)
    hashes = {p: _hash(p) for p in files}
    questions = list(b.questions)
    feedback_dir = out_csv.with_name(out_csv.stem + "_feedback")
    feedback_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[Path, dict[str, Any]] = {}
    taken: set[str] = set()
    lock = threading.Lock()

    def finish(path: Path, graded: Graded) -> None:
        with lock:
            rows[path] = graded.row
            report.write_csv(out_csv, questions, list(rows.values()))
            name = report.feedback_name(path.name, taken)
            text = report.feedback_text(graded.row, graded.results, graded.note)
            (feedback_dir / name).write_text(text, encoding="utf-8")
            row = graded.row
            print(
                report.clean(
                    f"{row['file']}: {row['status']} {row['total']}/{row['possible']}"
                ),
                flush=True,
            )

    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        futures = {pool.submit(grade_notebook, b, p, options): p for p in files}
        for future in as_completed(futures):
            path = futures[future]
            try:
                graded = future.result()
            except Exception as exc:  # a grader bug must not lose the other rows
                graded = Graded(
                    _error_row(path.name, b, f"grading crashed: {type(exc).__name__}")
                )
                graded.row["error"] = report.short(
                    f"grading crashed: {type(exc).__name__}: {exc}"
                )
            finish(path, graded)
    changed = [p for p in files if _hash(p) != hashes[p]]
    for path in changed:
        rows[path] = _error_row(
            path.name, b, "the file changed while it was being graded: grade it again"
        )
    if _hash(autograder) != zip_hash:
        for path in files:
            rows[path] = _error_row(
                path.name,
                b,
                "the autograder zip changed during grading: nothing is valid",
            )
    report.write_csv(out_csv, questions, list(rows.values()))
    return sorted(rows.values(), key=lambda r: r["file"])
