"""One sandboxed run: a job in, the exports read back (as data, within limits)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbook.grading import codec, mounts, sandbox
from llmbook.grading.bundle import Bundle

__all__ = ["Exports", "run_job"]

EXPORT_LIMIT = 64 * 2**20  # bytes one submission may send on its pipe, in all
JSON_LIMIT = 8 * 2**20  # bytes of one exported JSON file
JSON_CONTAINERS = 400_000  # objects and arrays in one exported JSON file
TENSOR_LIMIT = EXPORT_LIMIT
# the reference run (``mode="classify"``, the course's own solution, when the lab is
# built) may export more: its values are stored in the zip
TRUSTED_LIMIT = 2**30


@dataclass
class Exports:
    """What a run left behind, parsed; `problem` says why it stopped early, if it did.

    `problem` is the grader's own words (it goes to the student's feedback); `detail`
    adds what the sandbox said (its error text, its stderr), for the CSV only.
    """

    questions: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores: dict[str, codec.TensorStore] = field(default_factory=dict)
    cell_errors: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None
    detail: str = ""
    wall_s: float = 0.0
    cpu_s: float | None = None  # as the sandboxed process reported it (statistics only)
    export_bytes: int = 0
    peak_mb: float | None = (
        None  # the sandbox's peak memory, where a cgroup measured it
    )


def _read_json(path: Path, trusted: bool = False) -> Any:
    size_limit = TRUSTED_LIMIT if trusted else JSON_LIMIT
    containers = TRUSTED_LIMIT if trusted else JSON_CONTAINERS
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > size_limit:
            return None
        return codec.loads_limited(path.read_bytes(), containers)
    except (OSError, ValueError, RecursionError, MemoryError):
        return None


def _where(progress: Any) -> str:
    if not isinstance(progress, dict):
        return "before the first cell"
    stage = progress.get("stage")
    if stage == "cell" and isinstance(progress.get("cell"), int):
        return f"in cell {progress['cell']}"
    if stage in ("test", "export"):
        question = progress.get("question")
        if isinstance(question, str) and re.fullmatch(r"[A-Za-z0-9_]{1,40}", question):
            return (
                f"in a test of {question}"
                if stage == "test"
                else f"while exporting {question}"
            )
    if stage == "done":
        return "after the last cell"
    return "at an unknown point"


def isolation_for(bundle: Bundle) -> sandbox.Isolation:
    """What the sandbox may import for this lab (see `sandbox.Isolation`)."""
    if bundle.needs is None:  # a zip built before the lab recorded its imports
        return sandbox.Isolation()
    roots = {m.split(".")[0] for m in bundle.needs}
    # these packages look for one another when imported (transformers probes peft,
    # sklearn, ...): a lab that needs one of them keeps them all
    hidden = () if roots & set(mounts.HIDEABLE) else mounts.HIDEABLE
    return sandbox.Isolation(
        llmbook=tuple(sorted(m for m in bundle.needs if m.split(".")[0] == "llmbook")),
        hidden=tuple(hidden),
    )


def run_job(
    bundle: Bundle,
    cells: list[dict[str, Any]],
    anchors: dict[str, int | None] | None,
    mode: str = "grade",
    unsafe: bool = False,
    timeout: float = 300.0,
    limits: sandbox.Limits | None = None,
) -> Exports:
    """Run the harness on `cells` in a fresh sandbox; read back its exports."""
    limits = limits or sandbox.Limits(timeout=timeout)
    if limits.timeout != timeout:
        limits = dataclasses.replace(limits, timeout=timeout)
    anchors = anchors or dict.fromkeys(bundle.questions)
    job = {
        "mode": mode,
        "cells": cells,
        "anchors": anchors,
        "questions": bundle.job_questions(classify=mode == "classify"),
    }
    tmp = Path(tempfile.mkdtemp(prefix="llmbook-grade-"))
    try:
        export = tmp / "export"
        export.mkdir()
        trusted = mode == "classify"
        result, sent = sandbox.run_untrusted(
            job,
            export,
            limits,
            unsafe,
            isolation_for(bundle),
            TRUSTED_LIMIT if trusted else EXPORT_LIMIT,
        )
        exports = Exports(wall_s=result.wall_s, export_bytes=sent.bytes)
        exports.peak_mb = sent.peak_mb
        for question in bundle.questions:
            data = _read_json(export / f"{question}.json", trusted)
            if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
                continue
            tensors = export / f"{question}.safetensors"
            try:
                limit = TRUSTED_LIMIT if trusted else TENSOR_LIMIT
                if tensors.is_symlink() or (
                    tensors.exists() and tensors.stat().st_size > limit
                ):
                    continue
                exports.stores[question] = codec.TensorStore.load(tensors)
            except Exception:  # a malformed safetensors file: that question is lost
                continue
            exports.questions[question] = data
        errors = _read_json(export / "cells.json")
        if isinstance(errors, list):
            exports.cell_errors = [e for e in errors if isinstance(e, dict)][:200]
        done = _read_json(export / "done.json")
        if isinstance(done, dict) and isinstance(done.get("cpu_s"), (int, float)):
            exports.cpu_s = float(done["cpu_s"])
        progress = _read_json(export / "progress.json")
        harness_error = _read_json(export / "harness_error.json")
        where = _where(progress)
        finished = (
            isinstance(done, dict)
            and done.get("done") is True
            and result.returncode == 0
            and not result.timed_out
        )
        if sent.problem:
            exports.problem = f"grading stopped {where}: {sent.problem}"
        elif result.timed_out:
            exports.problem = (
                f"timed out after {limits.wall_timeout:g} s of wall-clock time {where}"
            )
        elif finished:
            pass
        elif sent.oom:
            exports.problem = (
                f"ran out of memory ({limits.sandbox_mb} MB for the whole sandbox) "
                f"{where}"
            )
        elif result.signal == signal.SIGXCPU:
            exports.problem = f"used up its {limits.timeout:g} s of CPU time {where}"
        elif result.signal is not None:
            name = signal.Signals(result.signal).name if result.signal < 65 else ""
            exports.problem = f"the process was killed ({name}) {where}"
        elif isinstance(harness_error, dict):
            exports.problem = f"grading stopped {where}"
            exports.detail = str(harness_error.get("error"))[:300]
        elif not (isinstance(done, dict) and done.get("done") is True):
            code = result.returncode
            detail = result.stderr.strip().splitlines()[-1:] if result.stderr else []
            exports.problem = (
                f"the notebook ended the run {where} (exit status {code}; os._exit, "
                "sys.exit in a test, or out of memory?)"
            )
            exports.detail = detail[0][:200] if detail else ""
        return exports
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
