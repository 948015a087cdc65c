"""One sandboxed run: a job in, the exports read back (as data, within limits)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbook.grading import codec, sandbox
from llmbook.grading.bundle import Bundle

__all__ = ["Exports", "run_job"]

JSON_LIMIT = 64 * 1024 * 1024
TENSOR_LIMIT = 512 * 1024 * 1024


@dataclass
class Exports:
    """What a run left behind, parsed; `problem` says why it stopped early, if it did."""

    questions: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores: dict[str, codec.TensorStore] = field(default_factory=dict)
    cell_errors: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None
    wall_s: float = 0.0
    cpu_s: float | None = None  # as the sandboxed process reported it (statistics only)


def _read_json(path: Path) -> Any:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > JSON_LIMIT:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _where(progress: Any) -> str:
    if not isinstance(progress, dict):
        return "before the first cell"
    stage = progress.get("stage")
    if stage == "cell":
        return f"in cell {progress.get('cell')}"
    if stage == "test":
        return f"in test {progress.get('test')} of {progress.get('question')}"
    if stage == "export":
        return f"while exporting {progress.get('question')}"
    if stage == "done":
        return "after the last cell"
    return "at an unknown point"


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
        limits = sandbox.Limits(
            timeout, limits.memory_mb, limits.file_mb, limits.processes
        )
    anchors = anchors or dict.fromkeys(bundle.questions)
    job = {
        "mode": mode,
        "out": sandbox.EXPORT,
        "cells": cells,
        "anchors": anchors,
        "questions": bundle.job_questions(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="llmbook-grade-"))
    try:
        export = tmp / "export"
        export.mkdir()
        if unsafe:
            job["out"] = str(export)
        elif os.geteuid() == 0:
            os.chown(export, sandbox.NOBODY, sandbox.NOBODY)
        result = sandbox.run_untrusted(json.dumps(job).encode(), export, limits, unsafe)
        exports = Exports(wall_s=result.wall_s)
        for question in bundle.questions:
            data = _read_json(export / f"{question}.json")
            if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
                continue
            tensors = export / f"{question}.safetensors"
            try:
                if tensors.is_symlink() or (
                    tensors.exists() and tensors.stat().st_size > TENSOR_LIMIT
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
        if result.timed_out:
            exports.problem = (
                f"timed out after {limits.wall_timeout:g} s of wall-clock time {where}"
            )
        elif result.signal == signal.SIGXCPU:
            exports.problem = f"used up its {limits.timeout:g} s of CPU time {where}"
        elif result.signal is not None:
            name = signal.Signals(result.signal).name if result.signal < 65 else ""
            exports.problem = f"the process was killed ({name}) {where}"
        elif isinstance(harness_error, dict):
            exports.problem = (
                f"grading stopped {where}: {str(harness_error.get('error'))[:300]}"
            )
        elif not (isinstance(done, dict) and done.get("done") is True):
            code = result.returncode
            detail = result.stderr.strip().splitlines()[-1:] if result.stderr else []
            exports.problem = (
                f"the notebook ended the run {where} (exit status {code}; os._exit, "
                "sys.exit in a test, or out of memory?)"
                + (f": {detail[0][:200]}" if detail else "")
            )
        return exports
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
