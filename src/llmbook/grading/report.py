"""What the grader writes: the CSV (sorted, one row per file) and feedback reports."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from llmbook.grading.scoring import QuestionResult

__all__ = ["columns", "feedback_text", "feedback_name", "write_csv"]

MESSAGE_LIMIT = 300


def short(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line, at most `limit` characters."""
    message = " ".join(str(message).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def columns(questions: list[str]) -> list[str]:
    return [
        "file",
        *questions,
        "total",
        "possible",
        "status",
        "flags",
        "error",
        "sha256",
    ]


def write_csv(path: Path, questions: list[str], rows: list[dict[str, Any]]) -> None:
    """Write every row, sorted by file name, atomically (a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns(questions), extrasaction="ignore")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["file"]):
            writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def feedback_name(file: str, taken: set[str]) -> str:
    """A safe, unique report file name for submission `file`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(file).stem).strip("._") or "notebook"
    name, n = f"{stem}.txt", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.txt"
    taken.add(name)
    return name


def feedback_text(
    row: dict[str, Any],
    results: list[QuestionResult],
    cell_errors: list[dict[str, Any]],
    flags: list[str],
) -> str:
    """The student's report: scores, failed tests (public: message; hidden: name)."""
    lines = [f"Feedback for {row['file']}", ""]
    if row["status"] == "error":
        lines += [f"Not graded: {row['error']}", ""]
        return "\n".join(lines)
    lines.append(f"Total: {row['total']} / {row['possible']}")
    if row.get("error"):
        lines.append(f"Note: {row['error']} (later questions got no points)")
    lines.append("")
    for result in results:
        lines.append(f"{result.name}: {result.score:g} / {result.points:g}")
        if result.note:
            lines.append(f"  {result.note}")
            continue
        for test in result.tests:
            if test.passed:
                continue
            if test.hidden:
                lines.append(f"  failed hidden test {test.name}")
            else:
                lines.append(f"  failed {test.name}: {short(test.message)}")
    if cell_errors:
        lines += ["", "Cells that raised an error:"]
        for error in cell_errors[:20]:
            lines.append(
                f"  cell {error.get('cell')}: {short(str(error.get('error')), 200)}"
            )
    if flags:
        lines += ["", "Flagged for your instructor to review:"]
        lines += [f"  {flag}" for flag in flags]
    return "\n".join(lines) + "\n"
