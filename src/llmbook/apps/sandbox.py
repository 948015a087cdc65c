"""Run untrusted, model-written Python in a throwaway subprocess (Chapter 12).

Code that a model wrote is untrusted input: it can loop forever, fill the disk,
delete files or open network connections, not out of malice but because it is a
sample from a distribution over text. So it never runs in the notebook's process.
:func:`run_python` runs it with this interpreter in isolated mode and without
site-packages (``-I -S``: the standard library only), with limits on CPU time,
memory, file size and open files, and a wall-clock timeout that kills the whole
process group.

Isolation, strongest available first:

``"bwrap"``
    the bubblewrap sandbox of :mod:`llmbook.grading.sandbox` (the one that grades
    labs): no network (an empty network namespace), its own PID namespace, a
    read-only system, a private empty home and ``/tmp``, an unprivileged user.
``"process"``
    a plain subprocess with the limits above and the ``socket``, ``ssl`` and
    ``ctypes`` modules blocked at start-up. This blocks networking from ordinary
    Python code but is *not* a security boundary; it is used only where bubblewrap
    is unavailable (for example on Colab) and :func:`run_python` says so.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExecResult", "isolation_available", "run_python"]

#: Prepended in "process" mode: importing these raises ImportError.
_BLOCK = (
    "import sys as _s\n"
    "for _m in ('socket', '_socket', 'ssl', '_ssl', 'ctypes', '_ctypes'):\n"
    "    _s.modules[_m] = None\n"
    "del _s, _m\n"
)


@dataclass(frozen=True)
class ExecResult:
    """How one run ended: exit code (None when killed for the timeout), output."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float
    isolation: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def isolation_available() -> str:
    """ "bwrap" when the bubblewrap sandbox works here, else "process"."""
    try:
        from llmbook.grading.sandbox import check_sandbox

        check_sandbox()
        return "bwrap"
    except Exception:  # SandboxUnavailable, or not Linux
        return "process"


def _limits(cpu_s: int, memory_mb: int) -> None:
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(
    code: str,
    timeout: float = 5.0,
    memory_mb: int = 512,
    isolation: str = "auto",
    max_output: int = 10_000,
) -> ExecResult:
    """Run `code` in a fresh, limited interpreter; return its exit code and output.

    Args:
        code: Python source, run as ``python -I -S -c code`` (standard library only).
        timeout: wall-clock seconds before the process group is killed; CPU time is
            limited to the same number of seconds (rounded up).
        memory_mb: address-space limit of the interpreter.
        isolation: "bwrap", "process" or "auto" (bwrap when available).
        max_output: characters of stdout and stderr kept.

    Raises:
        ValueError: a bad `timeout`, `memory_mb` or `isolation`.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be >= 64, got {memory_mb}")
    if isolation == "auto":
        isolation = isolation_available()
    if isolation not in ("bwrap", "process"):
        raise ValueError(
            f"isolation must be 'auto', 'bwrap' or 'process', got {isolation!r}"
        )
    argv = [sys.executable, "-I", "-S", "-c", code]
    cpu = int(timeout) + 1
    with tempfile.TemporaryDirectory(prefix="llmbook-run-") as tmp:
        if isolation == "bwrap":
            from llmbook.grading.sandbox import Limits, bwrap_command

            limits = Limits(timeout=timeout, memory_mb=memory_mb, file_mb=16)
            argv = bwrap_command(Path(tmp), argv, limits)
            env = {"PATH": "/usr/bin:/bin"}
        else:
            argv[-1] = _BLOCK + code
            env = {
                "PATH": "/usr/bin:/bin",
                "HOME": tmp,
                "TMPDIR": tmp,
                "LANG": "C.UTF-8",
            }
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _limits(cpu, memory_mb),
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            out, err = proc.communicate()
        wall = time.monotonic() - start
    return ExecResult(
        returncode=None if timed_out else proc.returncode,
        stdout=out.decode("utf-8", "replace")[:max_output],
        stderr=err.decode("utf-8", "replace")[:max_output],
        timed_out=timed_out,
        wall_s=wall,
        isolation=isolation,
    )
