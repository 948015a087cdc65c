"""Reading a submission on the trusted side: checks, lab identity, the job it becomes.

Nothing here executes the notebook; it is parsed as JSON and validated with nbformat.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Submission", "SubmissionError", "read_submission", "sha256_file"]

MAX_BYTES = 50 * 1024 * 1024  # a lab notebook is well under 1 MB
CHECK = re.compile(r"""grader\.check\(\s*["']([A-Za-z0-9_]+)["']""")
IGNORE_TAG = "otter_ignore"  # cells otter skips when grading (the untimed extras)


class SubmissionError(ValueError):
    """A file that cannot be graded; the message says why, for the CSV."""


@dataclass
class Submission:
    """A parsed notebook: its code cells, and where each question is checked."""

    path: Path
    sha256: str
    lab: str | None  # from metadata.otter.assignment_name, if present
    cells: list[dict[str, Any]] = field(default_factory=list)  # index, source, skip

    def anchors(self, questions: list[str]) -> dict[str, int | None]:
        """Position (in `cells`) of each question's first ``grader.check`` cell."""
        found: dict[str, int | None] = dict.fromkeys(questions)
        for position, cell in enumerate(self.cells):
            for name in CHECK.findall(cell["source"]):
                if name in found and found[name] is None:
                    found[name] = position
        return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_submission(path: Path) -> Submission:
    """Parse and validate `path`; SubmissionError (with a clear reason) if unusable."""
    import nbformat

    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SubmissionError(
                f"file is {size / 1e6:.0f} MB; a notebook over {MAX_BYTES // 2**20} MB "
                "is not graded (clear its outputs)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise SubmissionError(f"cannot read the file: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(
            f"not a readable notebook: not valid JSON ({exc})"
        ) from exc
    if not isinstance(raw, dict) or not (
        isinstance(raw.get("cells"), list) or isinstance(raw.get("worksheets"), list)
    ):
        kind = type(raw).__name__ if not isinstance(raw, dict) else "an object"
        keys = ", ".join(sorted(map(str, raw))[:5]) if isinstance(raw, dict) else ""
        raise SubmissionError(
            f"not a readable notebook: valid JSON, but {kind} without a 'cells' list"
            + (f" (keys: {keys})" if keys else "")
            + ": was the right file handed in?"
        )
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as exc:  # nbformat raises many kinds
        raise SubmissionError(
            f"not a readable notebook: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    cells = []
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(map(str, source))
        if not isinstance(source, str):
            raise SubmissionError(
                f"not a readable notebook: cell {index} has no source"
            )
        tags = cell.get("metadata", {}).get("tags", [])
        cells.append(
            {
                "index": index,
                "source": source,
                "skip": isinstance(tags, list) and IGNORE_TAG in tags,
            }
        )
    otter = nb.get("metadata", {}).get("otter", {})
    lab = otter.get("assignment_name") if isinstance(otter, dict) else None
    return Submission(
        path=path,
        sha256=digest,
        lab=lab if isinstance(lab, str) else None,
        cells=cells,
    )


def master_cells(master: Path) -> list[dict[str, Any]]:
    """The code cells of an otter master, without its test cells (for the reference)."""
    import nbformat

    nb = nbformat.read(master, as_version=4)
    cells, in_tests = [], False
    for index, cell in enumerate(nb.cells):
        text = cell.source.strip()
        if cell.cell_type == "raw":
            if text.startswith("# BEGIN TESTS"):
                in_tests = True
            elif text.startswith("# END TESTS"):
                in_tests = False
            continue
        if cell.cell_type != "code" or in_tests:
            continue
        tags = cell.metadata.get("tags", [])
        cells.append(
            {"index": index, "source": cell.source, "skip": IGNORE_TAG in tags}
        )
    return cells
