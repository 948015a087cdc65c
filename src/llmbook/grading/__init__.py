"""Bulk grading of lab submissions that students cannot forge.

``llmbook-grade`` (or ``python -m llmbook.grading``) grades a folder of notebooks
against the autograder zip that ``make labs`` builds::

    llmbook-grade --autograder _build/autograder/lab02_attention.zip \\
        --submissions submissions/ --out grades.csv

The trust model, in short (book/instructors.md says it in full): nothing the
student's process computes is trusted except the student's own answers.

- each notebook runs in its own sandbox (`llmbook.grading.sandbox`): no network, its
  own PID namespace, an unprivileged user, private sized tmpfs folders, a memory and
  process limit for the whole sandbox, nothing of the grader's files in sight, and of
  ``llmbook`` and the answer-doing libraries only what the lab imports;
- inside, `llmbook.grading.harness` runs the cells and each test's *probes*: the test
  cut down when the lab was built (`llmbook.grading.slicing.plan_test`) to the
  statements that call the student's code, with its asserts replaced by recorders of
  the values the student's objects produced. The test's expected values, conditions
  and messages are not there; the student's code can take the harness over and gains
  nothing. It sends only data (JSON and safetensors) on a pipe, at most
  ``runner.EXPORT_LIMIT`` bytes;
- outside, `llmbook.grading.scoring` puts the reference solution's values (stored in
  the zip) in place of everything the test computes itself, evaluates the asserts
  with the grader's own Python and PyTorch and compares each student value with the
  reference; only this side writes the CSV and the feedback
  (`llmbook.grading.report`: one row per file, sorted, cleaned, formula-safe), and
  the feedback holds only scores and public tests' fixed message text.
- inputs are bounded before they are parsed: only regular files, size, JSON objects,
  nesting and number length, code per cell (`llmbook.grading.notebook`), so the
  grader's own memory stays under 1 GB.

Modules: ``cli`` (command line), ``grade`` (a folder), ``runner`` (one sandboxed run),
``sandbox`` (with ``mounts``: what it can read; ``limits``; ``exports``: its one
pipe out), ``harness``, ``probes``, ``slicing``,
``codec``, ``scoring``, ``integrity``,
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
