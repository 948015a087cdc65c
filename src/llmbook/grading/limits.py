"""The grading sandbox's resource limits: per process (``setrlimit``, always) and for
the whole sandbox (a cgroup, where the grader may create one).

:class:`Limits` holds the numbers; :func:`set_limits` applies the per-process ones in
the child before it runs bubblewrap; :class:`Cgroup` bounds the memory and the number
of processes of everything in the sandbox together (see :mod:`llmbook.grading.sandbox`).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cgroup", "Limits", "set_limits"]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    timeout: float = 300.0  # CPU seconds (an infinite loop ends here)
    memory_mb: int = 6144  # address space per process (PyTorch maps about 1.5 GB)
    file_mb: int = 256  # largest file
    processes: int = 64  # processes in the sandbox
    sandbox_mb: int = 4096  # memory of the whole sandbox (cgroup), tmpfs included
    disk_mb: int = 1024  # its tmpfs mounts together (half for /home/student)

    @property
    def wall_timeout(self) -> float:
        """Wall-clock limit: generous, for code that sleeps; a busy machine is slow."""
        return 2 * self.timeout + 60


def set_limits(limits: Limits, cpu_seconds: int, cgroups: list[str]) -> None:
    """In the child, before exec: limits inherited by everything it starts."""
    for procs in cgroups:  # join the sandbox's cgroups ("0": this process)
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    if os.geteuid() == 0:  # counts processes of the sandbox user, nobody
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes,) * 2)


class Cgroup:
    """A memory and process limit for the whole sandbox, where the grader may set one.

    cgroup v2 (a child of the grader's own cgroup, which must be delegated to it, or
    the root as root), else cgroup v1's ``memory`` and ``pids`` controllers (as root).
    `procs` are the files a new process writes its pid to; empty when neither works.
    """

    def __init__(self, limits: Limits) -> None:
        self.paths: list[Path] = []
        self.procs: list[str] = []
        self.memory_file: Path | None = None
        self.events: Path | None = None
        name = f"llmbook-grade-{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"
        try:
            self._v2(name, limits) or self._v1(name, limits)
        except OSError:
            self.close()
            self.procs = []

    def _v2(self, name: str, limits: Limits) -> bool:
        base = Path("/sys/fs/cgroup")
        if not (base / "cgroup.controllers").is_file():
            return False
        own = Path(open("/proc/self/cgroup").read().split("::", 1)[-1].strip())
        parent = base / str(own).lstrip("/")
        if not os.access(parent, os.W_OK):
            return False
        group = parent / name
        group.mkdir()
        self.paths.append(group)
        (group / "memory.max").write_text(str(limits.sandbox_mb * 1024 * 1024))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        (group / "pids.max").write_text(str(limits.processes))
        self.procs = [str(group / "cgroup.procs")]
        self.memory_file, self.events = group / "memory.peak", group / "memory.events"
        return True

    def _v1(self, name: str, limits: Limits) -> bool:
        memory, pids = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/pids")
        if not (memory / "cgroup.procs").is_file() or not os.access(memory, os.W_OK):
            return False
        group = memory / name
        group.mkdir()
        self.paths.append(group)
        (group / "memory.limit_in_bytes").write_text(
            str(limits.sandbox_mb * 1024 * 1024)
        )
        procs = [str(group / "cgroup.procs")]
        if (pids / "cgroup.procs").is_file() and os.access(pids, os.W_OK):
            pgroup = pids / name
            pgroup.mkdir()
            self.paths.append(pgroup)
            (pgroup / "pids.max").write_text(str(limits.processes))
            procs.append(str(pgroup / "cgroup.procs"))
        self.procs = procs
        self.memory_file = group / "memory.max_usage_in_bytes"
        self.events = group / "memory.oom_control"
        return True

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the sandbox for its memory limit."""
        try:
            text = self.events.read_text() if self.events else ""
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def peak_mb(self) -> float | None:
        try:
            return (
                int(self.memory_file.read_text()) / 2**20 if self.memory_file else None
            )
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for path in reversed(self.paths):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)
        self.paths = []
