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

import functools
import json
import os
import re
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
# what the harness itself needs of llmbook (paths under the package)
HARNESS_FILES = (
    "__init__.py",
    "grading/__init__.py",
    "grading/harness.py",
    "grading/probes.py",
    "grading/codec.py",
)
# packages that can do an answer's work: absent unless the lab's notebook or tests
# import one of them (they probe one another on import)
HIDEABLE = ("transformers", "peft", "sklearn", "sacrebleu", "nltk")


class SandboxUnavailable(RuntimeError):
    """Raised when bubblewrap is missing or cannot create its namespaces here."""


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


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def package_dir() -> Path:
    import llmbook

    return Path(llmbook.__file__).resolve().parent


def readable_roots() -> list[str]:
    """The directories the sandbox sees read-only: Python and its environment."""
    roots = {
        os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.exec_prefix),
        str(Path(os.path.realpath(sys.executable)).parent.parent),
    }
    roots = {r for r in roots if r not in ("/", "/usr") and os.path.isdir(r)}
    # the virtual environment's own path, when it is a symlink to elsewhere
    if os.path.realpath(sys.prefix) != sys.prefix and os.path.isdir(sys.prefix):
        roots.add(sys.prefix)
    return sorted(roots)


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


def llmbook_files(modules: tuple[str, ...] | None) -> list[str]:
    """Paths (under the package) of the harness, of `modules` with what they import
    (and their parent packages), and of the package's data files.

    None: the whole package (``[""]``). Computed once per `modules` (it parses the
    package's source, which does not change while a grading run lasts), under
    :data:`AST_LOCK`.
    """
    with AST_LOCK:
        return list(_llmbook_files(modules))


#: Held while a grading thread builds or compiles Python ASTs (the package's imports
#: here; integrity flags and the trusted checks in ``grade``): CPython 3.11's ast
#: module keeps its recursion depth in state that threads share, and two threads
#: converting ASTs at once can fail with "SystemError: AST constructor recursion depth
#: mismatch" (seen once under load). The sandboxed runs, where the time goes, stay
#: parallel.
AST_LOCK = threading.RLock()


@functools.lru_cache(maxsize=64)
def _llmbook_files(modules: tuple[str, ...] | None) -> tuple[str, ...]:
    if modules is None:
        return ("",)
    root = package_dir()
    files: set[str] = set(HARNESS_FILES)
    todo = [m for m in modules if m == "llmbook" or m.startswith("llmbook.")]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")[1:]
        for i in range(1, len(parts)):  # the parent packages run on import too
            todo.append(".".join(["llmbook", *parts[:i]]))
        candidates = ["/".join(parts) + ".py", "/".join([*parts, "__init__.py"])]
        for rel in candidates:
            if parts and (root / rel).is_file():
                files.add(rel)
                todo += _imported(root / rel, module, rel.endswith("__init__.py"))
    for path in root.rglob("*"):  # the package's data (corpora, weights): not code
        if path.is_file() and path.suffix not in (".py", ".pyc", ".pyo"):
            if "__pycache__" not in path.parts:
                files.add(str(path.relative_to(root)))
    return tuple(sorted(files))


def _imported(path: Path, module: str, is_package: bool) -> list[str]:
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.append(base)
            found += [f"{base}.{a.name}" for a in node.names]
    return [m for m in found if m == "llmbook" or m.startswith("llmbook.")]


def _blocker(folder: Path, name: str) -> Path:
    """A package named `name` whose import fails, saying why."""
    path = folder / f"blocked-{name}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "__init__.py").write_text(
        f"raise ImportError({name!r} + ' is not available while grading this lab: "
        "an answer may not use it')\n",
        encoding="utf-8",
    )
    return path


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
        for parent in _ancestors(path):
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
                cmd += ["--ro-bind", str(_blocker(scratch, name)), target]
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


def _set_limits(limits: Limits, cpu_seconds: int, cgroups: list[str]) -> None:
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


def python_argv() -> list[str]:
    """This interpreter, without user site or the script's folder on its path.

    Not ``-I``: that would also ignore ``PYTHONHASHSEED`` (the environment is the
    sandbox's own, set with ``--clearenv``).
    """
    return [sys.executable, "-s", "-P", "-m", "llmbook.grading.harness"]


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


@dataclass
class Exported:
    """What the sandbox sent on its pipe: files written under `folder`."""

    folder: Path
    bytes: int = 0
    problem: str | None = None  # over the limit, or a malformed frame
    peak_mb: float | None = None  # the sandbox's peak memory (cgroup), if known
    oom: bool = False  # the cgroup's memory limit killed a process


NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _receive(fd: int, folder: Path, limit: int, out: Exported, stop) -> None:
    """Read frames from the sandbox into `folder`, at most `limit` bytes in all."""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        buffer = b""
        while True:
            while b"\n" not in buffer:
                chunk = pipe.read(65536)
                if not chunk:
                    if buffer:
                        out.problem = "its exports ended in the middle of a frame"
                    return
                buffer += chunk
                if len(buffer) > 4096 and b"\n" not in buffer:
                    out.problem = "its exports were malformed"
                    return stop()
            line, buffer = buffer.split(b"\n", 1)
            try:
                header = json.loads(line)
                name, size = header["name"], int(header["size"])
            except (ValueError, KeyError, TypeError):
                out.problem = "its exports were malformed"
                return stop()
            if not (isinstance(name, str) and NAME.fullmatch(name)) or size < 0:
                out.problem = "its exports were malformed"
                return stop()
            out.bytes += len(line) + 1 + size
            if out.bytes > limit:
                out.problem = (
                    f"it exported more than {limit // 2**20} MB (the limit per "
                    "submission)"
                )
                return stop()
            part = folder / (name + ".part")
            with open(part, "wb") as f:
                need = size
                while need:
                    if not buffer:
                        buffer = pipe.read(min(65536, need))
                        if not buffer:
                            out.problem = "its exports ended in the middle of a frame"
                            return
                    take, buffer = buffer[:need], buffer[need:]
                    f.write(take)
                    need -= len(take)
            os.replace(part, folder / name)


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
            preexec_fn=lambda: _set_limits(  # setrlimit and writes: thread-safe
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
            target=_receive,
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
