"""Run one untrusted process in a throwaway Linux sandbox (bubblewrap).

What the sandboxed process gets (and nothing else):

- a read-only view of the system (``/usr``), of this Python and its virtual environment,
  and of the ``llmbook`` package directory: what a lab notebook imports;
- a private, size-capped, empty working directory (``/home/student``) and ``/tmp``;
- one writable export directory (``/export``) that the grader reads afterwards;
- no network (a new, empty network namespace), its own PID namespace (it sees only
  itself; when it ends the kernel kills whatever it started, daemons included), its own
  IPC and hostname;
- an unprivileged user: when the grader runs as root it drops to ``nobody`` (65534)
  with no capabilities and ``no_new_privs``; otherwise it keeps the caller's uid inside
  a user namespace that maps nothing else;
- resource limits: address space, CPU seconds, file size, number of processes and
  open files; the grader adds a wall-clock timeout (for code that sleeps) and kills
  the whole sandbox.

The autograder zip, the submissions folder, the CSV and other submissions' sandboxes
are simply not in its file system. ``--unsafe-no-sandbox`` runs the same process
without any of this (still in a temporary folder, with the limits).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Limits",
    "RunResult",
    "SandboxUnavailable",
    "check_sandbox",
    "run_untrusted",
]

NOBODY = 65534
WORKDIR, EXPORT = "/home/student", "/export"
STDERR_LIMIT = 20_000  # bytes of the sandbox's stderr kept (its setup errors)


class SandboxUnavailable(RuntimeError):
    """Raised when bubblewrap is missing or cannot create its namespaces here."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    timeout: float = 300.0  # CPU seconds (an infinite loop ends here)
    memory_mb: int = 6144  # address space (PyTorch alone maps about 1.5 GB)
    file_mb: int = 256  # largest file, and size of each private tmpfs
    processes: int = 256  # processes of the sandbox user (root grader only)

    @property
    def wall_timeout(self) -> float:
        """Wall-clock limit: generous, for code that sleeps; a busy machine is slow."""
        return 2 * self.timeout + 60


@dataclass
class RunResult:
    """How the untrusted process ended."""

    returncode: int | None  # None when it was killed for the timeout
    timed_out: bool
    wall_s: float
    stderr: str

    @property
    def signal(self) -> int | None:
        """The signal that killed it, if any (bwrap reports 128 + signal)."""
        code = self.returncode
        if code is None:
            return signal.SIGKILL
        if code < 0:
            return -code
        if code > 128 and code - 128 < 65:
            return code - 128
        return None


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def readable_roots() -> list[str]:
    """The directories the sandbox sees read-only: Python, its environment, llmbook."""
    import llmbook

    package = Path(llmbook.__file__).resolve().parent
    roots = {
        os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.exec_prefix),
        str(Path(os.path.realpath(sys.executable)).parent.parent),
        str(package),
    }
    roots = {r for r in roots if r not in ("/", "/usr") and os.path.isdir(r)}
    # the virtual environment's own path, when it is a symlink to elsewhere
    if os.path.realpath(sys.prefix) != sys.prefix and os.path.isdir(sys.prefix):
        roots.add(sys.prefix)
    return sorted(roots)


def check_roots_exclude(roots: list[str], secrets: list[Path]) -> None:
    """Refuse when a folder the sandbox would see holds something it must not."""
    for root in roots:
        for secret in secrets:
            resolved = secret.resolve()
            if resolved == Path(root) or Path(root) in resolved.parents:
                raise SandboxUnavailable(
                    f"{resolved} is inside {root}, which the sandbox must be able to "
                    "read (the Python environment or the llmbook package): move the "
                    "submissions, the autograder zip and the output elsewhere"
                )


def bwrap_command(export: Path, argv: list[str], limits: Limits) -> list[str]:
    """The bubblewrap command line that runs `argv` with `export` as ``/export``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    root = os.geteuid() == 0
    size = str(limits.file_mb * 1024 * 1024)
    cmd = [bwrap, "--die-with-parent", "--new-session"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try"]
    if not root:
        cmd += ["--unshare-user"]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for etc in ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group"):
        cmd += ["--ro-bind-try", etc, etc]
    # The private /tmp first: a Python or venv that lives under /tmp (a clone in a
    # temporary folder) is then bound on top of it instead of being hidden by it.
    cmd += ["--size", size, "--perms", "1777", "--tmpfs", "/tmp"]
    made: set[str] = set()
    for directory in readable_roots():
        for parent in _ancestors(directory + "/x"):
            if parent not in made and not parent.startswith("/usr"):
                cmd += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        cmd += ["--ro-bind", directory, directory]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--size", size, "--perms", "1777", "--tmpfs", "/dev/shm"]
    cmd += ["--size", size, "--perms", "1777", "--tmpfs", WORKDIR]
    cmd += ["--bind", str(export), EXPORT, "--chdir", WORKDIR]
    cmd += ["--clearenv"]
    for key, value in sandbox_env().items():
        cmd += ["--setenv", key, value]
    cmd += ["--"]
    if root:  # drop to nobody inside: no capabilities, no way back
        cmd += [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ]
    return cmd + argv


def sandbox_env(home: str = WORKDIR) -> dict[str, str]:
    return {
        "HOME": home,
        "TMPDIR": "/tmp",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _set_limits(limits: Limits, cpu_seconds: int) -> None:
    """In the child, before exec: limits inherited by everything it starts."""
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    if os.geteuid() == 0:  # counts processes of the sandbox user, nobody
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes,) * 2)


def python_argv() -> list[str]:
    """This interpreter, isolated (-I: no user site, no environment variables)."""
    return [sys.executable, "-I", "-m", "llmbook.grading.harness"]


def run_untrusted(
    job: bytes, export: Path, limits: Limits, unsafe: bool = False
) -> RunResult:
    """Run the harness on `job` (stdin) with `export` as its export folder."""
    cpu = max(1, int(limits.timeout) + 1)
    if unsafe:
        work = export.parent / "work"
        work.mkdir(exist_ok=True)
        argv = python_argv()
        env = sandbox_env(str(work))
        env["TMPDIR"] = str(work)
        cwd = str(work)
    else:
        argv = bwrap_command(export, python_argv(), limits)
        env, cwd = {"PATH": "/usr/bin:/bin"}, str(export)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: _set_limits(
            limits, cpu
        ),  # only setrlimit calls: safe with threads
    )
    stderr = bytearray()

    def drain() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(65536):
            if len(stderr) < STDERR_LIMIT:
                stderr.extend(chunk[: STDERR_LIMIT - len(stderr)])

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timed_out = False
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(job)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        proc.wait(timeout=limits.wall_timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc)
        reader.join(timeout=5)
    returncode = None if timed_out else proc.returncode
    return RunResult(
        returncode=returncode,
        timed_out=timed_out,
        wall_s=time.monotonic() - start,
        stderr=stderr.decode("utf-8", "replace"),
    )


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the sandbox (bwrap's death takes its PID namespace down) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a stuck kernel task
        pass


_CHECKED: dict[str, str | None] = {}


def check_sandbox() -> None:
    """Raise SandboxUnavailable, saying why, unless a sandbox works on this machine."""
    if "result" not in _CHECKED:
        _CHECKED["result"] = _probe()
    problem = _CHECKED["result"]
    if problem:
        raise SandboxUnavailable(problem)


def _probe() -> str | None:
    import tempfile

    if not sys.platform.startswith("linux"):
        return "the sandbox needs Linux (bubblewrap and namespaces)"
    if shutil.which("bwrap") is None:
        return (
            "bubblewrap (bwrap) is not installed: `sudo apt-get install bubblewrap` "
            "(Debian/Ubuntu) or `sudo dnf install bubblewrap` (Fedora)"
        )
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is needed to drop root inside the sandbox"
    with tempfile.TemporaryDirectory(prefix="llmbook-sandbox-check-") as tmp:
        export = Path(tmp)
        if os.geteuid() == 0:
            os.chown(export, NOBODY, NOBODY)
        argv = bwrap_command(export, [sys.executable, "-I", "-c", "pass"], Limits())
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not start: {exc}"
    if result.returncode != 0:
        return (
            "bubblewrap cannot create the sandbox's namespaces here: "
            f"{result.stderr.strip()[:300]} (unprivileged user namespaces must be "
            "enabled: sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 also "
            "kernel.apparmor_restrict_unprivileged_userns=0, or run as root)"
        )
    return None
