"""What the grader writes: the CSV (sorted, one row per file) and feedback reports.

Everything written or printed is cleaned first: control characters (a newline in a
file name, terminal escapes) are removed, and a CSV cell that a spreadsheet would
read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) gets a leading ``'``, as OWASP recommends against CSV injection. Feedback file
names are derived from the submission's name without collisions: a name that is
already safe keeps its stem, any other gets a hash of the full name appended.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from llmbook.grading.scoring import QuestionResult

__all__ = ["clean", "columns", "feedback_name", "feedback_text", "write_csv"]

MESSAGE_LIMIT = 300
FORMULA = ("=", "+", "-", "@", "\t", "\r")
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
HASHED = re.compile(r".*-[0-9a-f]{10}")


def clean(text: object) -> str:
    """`text` without control or format characters (newlines become spaces)."""
    out = []
    for ch in str(text):
        if ch in "\n\r\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def short(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """One clean line, at most `limit` characters."""
    message = " ".join(clean(message).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def csv_cell(value: object) -> object:
    """A value as it goes into the CSV: numbers as they are, text clean and never
    starting like a formula."""
    if isinstance(value, (int, float)) or value is None:
        return value
    text = clean(value)
    return "'" + text if text.startswith(FORMULA) else text


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
            writer.writerow({k: csv_cell(v) for k, v in row.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def feedback_name(file: str, taken: set[str]) -> str:
    """A safe report file name for submission `file`, unique among `taken`.

    ``a_ref.ipynb`` -> ``a_ref.txt``; a name with anything else in it (a space, a
    leading dot or ``=``, a non-ASCII letter), or one that already ends like a hashed
    name, -> its safe characters plus ``-`` and 10 hex digits of the name's sha256, so
    ``a ref.ipynb`` cannot take ``a_ref.txt`` from ``a_ref.ipynb``.
    """
    stem = file[: -len(".ipynb")] if file.endswith(".ipynb") else ""
    if SAFE_STEM.fullmatch(stem) and not HASHED.fullmatch(stem):
        name = f"{stem}.txt"
    else:
        shown = stem if file.endswith(".ipynb") else file
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", clean(shown)).strip("._-")[:100]
        digest = hashlib.sha256(file.encode("utf-8", "surrogateescape")).hexdigest()
        name = f"{safe or 'notebook'}-{digest[:10]}.txt"
    base, n = name[: -len(".txt")], 1
    while name in taken:  # only a 40-bit hash collision gets here
        n += 1
        name = f"{base}-{n}.txt"
    taken.add(name)
    return name


def feedback_text(
    row: dict[str, Any], results: list[QuestionResult], note: str = ""
) -> str:
    """The student's report: per-question scores and failed public tests' messages.

    Only the grader's own words: assert messages rendered from the tests' source,
    "raised ValueError" for a test that raised, why a run stopped. No hidden test's
    name or message, nothing the notebook printed or raised (which could carry the
    probes' source out of the sandbox).
    """
    lines = [f"Feedback for {clean(row['file'])}", ""]
    if row["status"] == "error":
        lines += [f"Not graded: {short(row['error'])}", ""]
        return "\n".join(lines)
    lines.append(f"Total: {row['total']} / {row['possible']}")
    if note:
        lines.append(f"Note: {short(note)} (later questions got no points)")
    lines.append("")
    for result in results:
        lines.append(f"{result.name}: {result.score:g} / {result.points:g}")
        if result.note:
            lines.append(f"  {short(result.note)}")
            continue
        hidden = 0
        for test in result.tests:
            if test.passed:
                continue
            if test.hidden:
                hidden += 1
            else:
                lines.append(f"  failed {test.name}: {short(test.message)}")
        if hidden:
            lines.append(f"  failed {hidden} hidden test{'s' if hidden > 1 else ''}")
    return "\n".join(lines) + "\n"
