"""Run one untrusted process in a throwaway Linux sandbox (bubblewrap).

What the sandboxed process gets (and nothing else):

- a read-only view of the system (``/usr``) and of this Python and its virtual
  environment, minus the packages the lab does not need that could do an answer's
  work (``transformers``, ``peft``, ... : see `hidden_packages`), which are replaced
  by a package whose import fails;
- of ``llmbook``, only the harness's own modules and the modules the lab's notebook
  and tests import (e.g. ``llmbook.utils``), under ``/opt/llmbook-grader``: a lab that
  does not use ``llmbook.model`` cannot import the course's reference attention;
- a private working directory (``/home/student``), ``/tmp`` and ``/dev/shm``: sized
  tmpfs mounts, together ``Limits.disk_mb`` (the sandbox's whole disk quota: it
  writes nothing on the host's disks);
- one pipe to the grader, on which it sends its exports (the grader reads at most
  ``runner.EXPORT_LIMIT`` bytes from it); there is no export folder;
- no network (a new, empty network namespace), its own PID namespace (it sees only
  itself; when it ends the kernel kills whatever it started, daemons included), its own
  IPC and hostname; bubblewrap's own arguments are passed on a file descriptor, so
  ``/proc/1/cmdline`` shows no host path;
- an unprivileged user: when the grader runs as root it drops to ``nobody`` (65534)
  with no capabilities and ``no_new_privs``; otherwise it keeps the caller's uid inside
  a user namespace that maps nothing else and may not create further user namespaces
  (``--disable-userns``);
- resource limits: a memory limit for the *whole* sandbox and a cap on its number of
  processes, with a cgroup (v2, else v1's memory and pids controllers) where the grader
  may create one (as root, or in a delegated cgroup); otherwise only the per-process
  limits hold, so the sandbox's memory is bounded by ``memory_mb`` times the process
  cap. Always: address space, CPU seconds, file size, open files per process, and a
  wall-clock timeout (for code that sleeps) after which the whole sandbox is killed.

The autograder zip, the submissions folder, the CSV and other submissions' sandboxes
are simply not in its file system. ``--unsafe-no-sandbox`` runs the same process
without any of this (still in a temporary folder, with the per-process limits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from llmbook.grading.exports import Exported, receive
from llmbook.grading.limits import Cgroup, Limits, set_limits
from llmbook.grading.mounts import (
    ancestors,
    blocker_package,
    llmbook_files,
    package_dir,
    readable_roots,
)

__all__ = [
    "Cgroup",
    "Isolation",
    "Limits",
    "RunResult",
    "SandboxUnavailable",
    "bwrap_args",
    "bwrap_command",
    "check_sandbox",
    "run_untrusted",
]

NOBODY = 65534
WORKDIR = "/home/student"
HARNESS_ROOT = "/opt/llmbook-grader"  # on the sandbox's PYTHONPATH
STDERR_LIMIT = 20_000  # bytes of the sandbox's stderr kept (its setup errors)


class SandboxUnavailable(RuntimeError):
    """Raised when bubblewrap is missing or cannot create its namespaces here."""


@dataclass(frozen=True)
class Isolation:
    """What of llmbook and of the hideable packages the sandbox sees."""

    llmbook: tuple[str, ...] | None = None  # modules the lab imports; None: all
    hidden: tuple[str, ...] = ()  # top-level packages replaced by a failing import


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


def check_roots_exclude(roots: list[str], secrets: list[Path]) -> None:
    """Refuse when a folder the sandbox would see holds something it must not."""
    for root in [*roots, str(package_dir())]:
        for secret in secrets:
            resolved = secret.resolve()
            if resolved == Path(root) or Path(root) in resolved.parents:
                raise SandboxUnavailable(
                    f"{resolved} is inside {root}, which the sandbox must be able to "
                    "read (the Python environment or the llmbook package): move the "
                    "submissions, the autograder zip and the output elsewhere"
                )


def bwrap_args(limits: Limits, isolation: Isolation, scratch: Path) -> list[str]:
    """bubblewrap's options (passed with ``bwrap --args FD``, out of sight)."""
    root = os.geteuid() == 0
    quarter = str(limits.disk_mb * 1024 * 1024 // 4)
    half = str(limits.disk_mb * 1024 * 1024 // 2)
    cmd = ["--die-with-parent", "--new-session"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try"]
    if not root:
        cmd += ["--unshare-user", "--disable-userns"]
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
    cmd += ["--size", quarter, "--perms", "1777", "--tmpfs", "/tmp"]
    made: set[str] = set()

    def parents(path: str) -> list[str]:
        out = []
        for parent in ancestors(path):
            if parent not in made and not parent.startswith("/usr"):
                out += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        return out

    for directory in readable_roots():
        cmd += parents(directory + "/x")
        cmd += ["--ro-bind", directory, directory]
    roots = readable_roots()
    for name in isolation.hidden:
        spec = _find(name)
        if spec is None or not os.path.isdir(spec):
            continue
        for root_dir in roots:  # under every path the sandbox can reach it by
            real = os.path.realpath(root_dir)
            if spec.startswith(real + "/"):
                target = root_dir + spec[len(real) :]
                cmd += ["--ro-bind", str(blocker_package(scratch, name)), target]
    package = package_dir()
    for rel in llmbook_files(isolation.llmbook):
        target = f"{HARNESS_ROOT}/llmbook/{rel}".rstrip("/")
        cmd += parents(target)
        cmd += ["--ro-bind", str(package / rel).rstrip("/"), target]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--size", quarter, "--perms", "1777", "--tmpfs", "/dev/shm"]
    cmd += ["--size", half, "--perms", "1777", "--tmpfs", WORKDIR, "--chdir", WORKDIR]
    cmd += ["--clearenv"]
    for key, value in sandbox_env().items():
        cmd += ["--setenv", key, value]
    return cmd


def bwrap_command(export: Path, argv: list[str], limits: Limits) -> list[str]:
    """A whole bubblewrap command line that runs `argv` with `export` as ``/export``.

    For one-off commands of other parts of the course (``llmbook.apps.sandbox``); the
    grader itself uses `run_untrusted` (options on a descriptor, exports on a pipe).
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    args = bwrap_args(limits, Isolation(), export)
    return [bwrap, *args, "--bind", str(export), "/export", *command_argv(argv)]


def no_userns_filter() -> bytes:
    """A seccomp program (classic BPF) that refuses new user namespaces.

    ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` fail with EPERM, ``clone3``
    (whose flags a filter cannot read) with ENOSYS, so the C library falls back to
    ``clone``. x86-64 only; on other machines it allows everything (and bubblewrap's
    ``--disable-userns`` still holds where the grader is not root).
    """
    import struct

    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, errno = 0x7FFF0000, 0x00050000
    program = [
        (ld, 0, 0, 4),  # arch
        (jeq, 0, 6, 0xC000003E),  # x86-64, else allow
        (ld, 0, 0, 0),  # syscall number
        (jeq, 6, 0, 435),  # clone3 -> ENOSYS
        (jeq, 1, 0, 272),  # unshare -> check flags
        (jeq, 0, 2, 56),  # clone -> check flags, else allow
        (ld, 0, 0, 16),  # flags (first argument, low 32 bits)
        (jset, 1, 0, 0x10000000),  # CLONE_NEWUSER -> EPERM
        (ret, 0, 0, allow),
        (ret, 0, 0, errno | 1),  # EPERM
        (ret, 0, 0, errno | 38),  # ENOSYS
    ]
    return b"".join(struct.pack("<HBBI", *op) for op in program)


def command_argv(argv: list[str]) -> list[str]:
    """What follows bubblewrap's options: the command, as ``nobody`` when root."""
    cmd = ["--"]
    if os.geteuid() == 0:  # drop to nobody inside: no capabilities, no way back
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


def _find(name: str) -> str | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def sandbox_env(home: str = WORKDIR, pythonpath: str = HARNESS_ROOT) -> dict[str, str]:
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
        "PYTHONHASHSEED": "0",  # honoured: the harness runs without -I/-E
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": pythonpath,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def python_argv() -> list[str]:
    """This interpreter, without user site or the script's folder on its path.

    Not ``-I``: that would also ignore ``PYTHONHASHSEED`` (the environment is the
    sandbox's own, set with ``--clearenv``).
    """
    return [sys.executable, "-s", "-P", "-m", "llmbook.grading.harness"]


def run_untrusted(
    job: dict,
    export: Path,
    limits: Limits,
    unsafe: bool = False,
    isolation: Isolation | None = None,
    export_limit: int = 64 * 2**20,
) -> tuple[RunResult, Exported]:
    """Run the harness on `job` (JSON on stdin); its exports land in `export`.

    `export` is a folder on the grader's side: the sandbox never sees it; what it
    sends on its pipe is written there, at most `export_limit` bytes in all.
    """
    isolation = isolation or Isolation()
    cpu = max(1, int(limits.timeout) + 1)
    scratch = export.parent
    read_fd, write_fd = os.pipe()
    job = {**job, "fd": write_fd}
    pass_fds = [write_fd]
    cgroup: Cgroup | None = None
    if unsafe:
        work = scratch / "work"
        work.mkdir(exist_ok=True)
        argv = python_argv()
        env = sandbox_env(str(work), str(package_dir().parent))
        env["TMPDIR"] = str(work)
        cwd = str(work)
    else:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        args = bwrap_args(limits, isolation, scratch)
        args_fd = os.memfd_create("bwrap-args", 0)  # inherited, not in argv
        os.write(args_fd, b"".join(a.encode() + b"\0" for a in args))
        os.lseek(args_fd, 0, os.SEEK_SET)
        seccomp_fd = os.memfd_create("bwrap-seccomp", 0)
        os.write(seccomp_fd, no_userns_filter())
        os.lseek(seccomp_fd, 0, os.SEEK_SET)
        os.lseek(args_fd, 0, os.SEEK_END)
        os.write(args_fd, b"--seccomp\0" + str(seccomp_fd).encode() + b"\0")
        os.lseek(args_fd, 0, os.SEEK_SET)
        pass_fds += [args_fd, seccomp_fd]
        argv = [bwrap, "--args", str(args_fd), *command_argv(python_argv())]
        env, cwd = {"PATH": "/usr/bin:/bin"}, str(scratch)
        cgroup = Cgroup(limits)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,
            preexec_fn=lambda: set_limits(  # setrlimit and writes: thread-safe
                limits, cpu, cgroup.procs if cgroup else []
            ),
        )
    finally:
        for fd in pass_fds:
            os.close(fd)
    stderr = bytearray()
    exported = Exported(export)

    def drain() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(65536):
            if len(stderr) < STDERR_LIMIT:
                stderr.extend(chunk[: STDERR_LIMIT - len(stderr)])

    def stop() -> None:
        _signal_group(proc)

    threads = [
        threading.Thread(target=drain, daemon=True),
        threading.Thread(
            target=receive,
            args=(read_fd, export, export_limit, exported, stop),
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    timed_out = False
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        proc.wait(timeout=limits.wall_timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc)
        for thread in threads:
            thread.join(timeout=5)
        if cgroup is not None:
            exported.peak_mb = cgroup.peak_mb()
            exported.oom = cgroup.oom_killed()
            cgroup.close()
    returncode = None if timed_out else proc.returncode
    result = RunResult(
        returncode=returncode,
        timed_out=timed_out,
        wall_s=time.monotonic() - start,
        stderr=stderr.decode("utf-8", "replace"),
    )
    return result, exported


def _signal_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
        args = bwrap_args(Limits(), Isolation(), Path(tmp))
        args += command_argv([sys.executable, "-I", "-c", "pass"])
        try:
            result = subprocess.run(
                ["bwrap", *args], capture_output=True, text=True, timeout=60
            )
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
