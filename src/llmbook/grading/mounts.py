"""What the grading sandbox can read: the Python environment, and of ``llmbook`` only
the harness and the modules a lab imports (Chapter-independent; used by
:mod:`llmbook.grading.sandbox` to build bubblewrap's mounts).

Packages that could do an answer's work (:data:`HIDEABLE`) are replaced by a package
whose import fails (:func:`blocker_package`) unless the lab itself imports one.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from pathlib import Path

__all__ = [
    "AST_LOCK",
    "HARNESS_FILES",
    "HIDEABLE",
    "blocker_package",
    "llmbook_files",
    "package_dir",
    "readable_roots",
]

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


def ancestors(path: str) -> list[str]:
    """The folders that contain `path`, outermost first (bubblewrap creates each)."""
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def package_dir() -> Path:
    """The installed ``llmbook`` package's folder."""
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


def blocker_package(folder: Path, name: str) -> Path:
    """A package named `name` whose import fails, saying why."""
    path = folder / f"blocked-{name}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "__init__.py").write_text(
        f"raise ImportError({name!r} + ' is not available while grading this lab: "
        "an answer may not use it')\n",
        encoding="utf-8",
    )
    return path
