"""The ``llmbook-grade`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llmbook.grading import sandbox
from llmbook.grading.bundle import BundleError
from llmbook.grading.grade import MAX_WORKERS, GradeOptions, grade_submissions

__all__ = ["main"]

DEFAULT_TIMEOUT = 300.0  # seconds per submission; a correct lab runs in about 10


def find_autograder(lab: str, root: Path = Path("_build/autograder")) -> Path:
    """The zip for `lab` (``lab02`` or ``lab02_attention``) under `root`."""
    matches = sorted(root.glob(f"{lab}*.zip"))
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise FileNotFoundError(
            f"no single autograder zip for {lab} in {root} (found: {found}); run "
            "`make labs` or pass --autograder"
        )
    return matches[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmbook-grade",
        description=(
            "Grade a folder of lab notebooks: each runs in a sandbox, the scores are "
            "computed outside it from the data it exports."
        ),
    )
    p.add_argument("--autograder", help="the lab's zip, _build/autograder/<lab>.zip")
    p.add_argument(
        "--lab",
        help="the lab (e.g. lab02): finds its zip in _build/autograder when "
        "--autograder is not given; notebooks without otter metadata are graded as it",
    )
    p.add_argument("--submissions", required=True, help="folder of submitted .ipynb")
    p.add_argument("--out", default="grades.csv", help="CSV to write")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"CPU seconds per submission (default {DEFAULT_TIMEOUT:g}); the wall-clock "
        "limit is twice that plus a minute",
    )
    p.add_argument(
        "--memory",
        type=int,
        default=sandbox.Limits().memory_mb,
        help="address-space limit per process of a submission, in MB (default "
        "%(default)s); the whole sandbox is limited to "
        f"{sandbox.Limits().sandbox_mb} MB where a cgroup can be made",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, MAX_WORKERS + 1),
        help="notebooks graded at once",
    )
    p.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run student code without the sandbox (only for code you trust)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.autograder is None and args.lab is None:
            raise ValueError("give --autograder ZIP or --lab NAME")
        autograder = (
            Path(args.autograder) if args.autograder else find_autograder(args.lab)
        )
        limits = sandbox.Limits(timeout=args.timeout, memory_mb=args.memory)
        options = GradeOptions(
            timeout=args.timeout,
            workers=args.workers,
            lab=args.lab,
            unsafe=args.unsafe_no_sandbox,
            limits=limits,
        )
        rows = grade_submissions(autograder, args.submissions, args.out, options)
    except sandbox.SandboxUnavailable as exc:
        print(
            f"llmbook-grade: error: no sandbox: {exc}.\nStudent code would run with "
            "your permissions, see your files and the network, and could change the "
            "grades. Fix the sandbox (see book/instructors.md), or pass "
            "--unsafe-no-sandbox for code you trust.",
            file=sys.stderr,
        )
        return 2
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"llmbook-grade: error: {exc}", file=sys.stderr)
        return 2
    if args.unsafe_no_sandbox:
        print("llmbook-grade: warning: graded WITHOUT a sandbox", file=sys.stderr)
    errors = sum(r["status"] != "ok" for r in rows)
    print(f"graded {len(rows)} notebook(s), {errors} not ok: {args.out}")
    return 0
