"""Reading a submission on the trusted side: checks, lab identity, the job it becomes.

Nothing here executes the notebook; it is parsed as JSON and validated with nbformat,
within limits checked before any parsing: only a regular file (never followed through
a symbolic link, never a FIFO or a device, which could block or never end), at most
`MAX_BYTES`, at most `MAX_CONTAINERS` JSON objects and arrays; then at most
`MAX_CELL` characters per code cell and `MAX_CODE` in all, before any cell's code is
parsed (by the integrity flags) or sent to the sandbox.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbook.grading.codec import ParseLimit, loads_limited

__all__ = ["Submission", "SubmissionError", "read_submission", "sha256_file"]

MAX_BYTES = 20 * 1024 * 1024  # a lab notebook is well under 1 MB without outputs
MAX_CONTAINERS = 1_000_000  # JSON objects and arrays in the file
MAX_CELL = 100_000  # characters of one code cell (a lab's longest is a few thousand)
MAX_CODE = 1_000_000  # characters of all code cells together
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


def file_kind(mode: int) -> str:
    """A file type in words, for error rows."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path` if it is a regular file; else OSError/
    SubmissionError. Symbolic links are not followed; a FIFO does not block."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise SubmissionError(
            f"{file_kind(mode)}: only regular files are graded (hand in the notebook "
            "itself)"
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # replaced between the two looks
        os.close(fd)
        raise SubmissionError(f"{file_kind(mode)}: only regular files are graded")
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path` (SubmissionError beyond)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise SubmissionError(
                f"file is {size / 1e6:.0f} MB; a notebook over {limit // 2**20} MB is "
                "not graded (clear its outputs)"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SubmissionError(f"file grew past {limit // 2**20} MB while being read")
    return data


def sha256_file(path: Path) -> str:
    """The hash of a regular file; SubmissionError for anything else (never followed,
    never read: a FIFO or a device is not hashed)."""
    digest = hashlib.sha256()
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_submission(path: Path) -> Submission:
    """Parse and validate `path`; SubmissionError (with a clear reason) if unusable."""
    import nbformat

    try:
        data = read_regular(path, MAX_BYTES)
    except OSError as exc:
        raise SubmissionError(f"cannot read the file: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        raw = loads_limited(data, MAX_CONTAINERS)
    except ParseLimit as exc:
        raise SubmissionError(f"not graded: {exc} (limits for a notebook)") from exc
    except (UnicodeDecodeError, ValueError) as exc:
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
    except RecursionError as exc:
        raise SubmissionError("not graded: JSON nested too deeply") from exc
    except Exception as exc:  # nbformat raises many kinds
        raise SubmissionError(
            f"not a readable notebook: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    cells, total = [], 0
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
        if len(source) > MAX_CELL:
            raise SubmissionError(
                f"not graded: cell {index} has {len(source):,} characters of code "
                f"(at most {MAX_CELL:,} per cell)"
            )
        total += len(source)
        if total > MAX_CODE:
            raise SubmissionError(
                f"not graded: more than {MAX_CODE:,} characters of code in all"
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
