"""Bulk grading of lab submissions that students cannot forge.

``llmbook-grade`` (or ``python -m llmbook.grading``) grades a folder of notebooks
against the autograder zip that ``make labs`` builds::

    llmbook-grade --autograder _build/autograder/lab02_attention.zip \\
        --submissions submissions/ --out grades.csv

The trust model, in short (book/instructors.md says it in full):

- each notebook runs in its own sandbox (`llmbook.grading.sandbox`): no network, its
  own PID namespace, an unprivileged user, a private empty folder, resource limits,
  and nothing of the grader's files in sight;
- inside, `llmbook.grading.harness` runs the cells and the lab's tests in a recording
  form (`llmbook.grading.probes`) and exports only data (JSON and safetensors);
- outside, `llmbook.grading.scoring` judges that data with the grader's own Python and
  PyTorch against the reference solution's values stored in the zip, and only this
  side writes the CSV (`llmbook.grading.report`), one row per file, sorted.

Modules: ``cli`` (command line), ``grade`` (a folder), ``runner`` (one sandboxed run),
``sandbox``, ``harness``, ``probes``, ``codec``, ``scoring``, ``integrity``,
``notebook``, ``bundle`` (the zip), ``labs`` (per-lab rules), ``report``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["grade_submissions", "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``llmbook-grade`` command (see `llmbook.grading.cli`)."""
    from llmbook.grading.cli import main as cli_main

    return cli_main(argv)


def grade_submissions(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Grade a folder (see `llmbook.grading.grade.grade_submissions`)."""
    from llmbook.grading.grade import grade_submissions as grade

    return grade(*args, **kwargs)
