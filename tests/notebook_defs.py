"""Load the definitions a chapter writes inline, without running the chapter.

"Teach, then import": a chapter writes a mechanism inline, ``src/llmbook`` holds the
same code, and a test checks that the two agree. This helper gives such a test the
notebook's version. It parses every code cell and executes, in notebook order, only

* the ``import`` statements, except any that would bind a name the notebook itself
  defines (so a closing ``from llmbook.model.attention import ...`` cannot shadow the inline
  code);
* the top-level ``def`` and ``class`` statements;
* assignments that attach a notebook function to a notebook class
  (``MultiHeadAttention.forward = forward``), the way a chapter builds a class across
  several cells.

Nothing else runs: no training, no downloads, no plots. A definition that reads a
global set elsewhere in the notebook (a default argument such as ``d=d_model``) needs
that global passed in ``extra_globals``.

Usage::

    from notebook_defs import notebook_definitions

    nb = notebook_definitions("chapters/03_attention.ipynb", ["MultiHeadAttention"])
    nb.MultiHeadAttention(d_model=16, n_heads=4)
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat

__all__ = ["notebook_definitions", "assert_same_signature"]

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _code_cells(path: Path) -> list[tuple[int, str]]:
    nb = nbformat.read(path, as_version=4)
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        # IPython magics and shell escapes are not Python: comment them out.
        lines = [
            "# " + line if line.lstrip().startswith(("%", "!")) else line
            for line in cell.source.splitlines()
        ]
        cells.append((index, "\n".join(lines)))
    return cells


def _bound_names(node: ast.Import | ast.ImportFrom) -> set[str]:
    return {(alias.asname or alias.name).split(".")[0] for alias in node.names}


def _attaches_method(node: ast.stmt, classes: set[str], functions: set[str]) -> bool:
    """``SomeClass.attr = some_function`` with both defined in the notebook."""
    if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Name):
        return False
    if node.value.id not in functions:
        return False
    return all(
        isinstance(t, ast.Attribute)
        and isinstance(t.value, ast.Name)
        and t.value.id in classes
        for t in node.targets
    )


def notebook_definitions(
    path: str | Path,
    names: Iterable[str],
    *,
    extra_globals: dict[str, Any] | None = None,
) -> SimpleNamespace:
    """Execute a notebook's imports and definitions; return the requested names.

    Raises ``KeyError`` naming what the notebook does define when a name is missing,
    and ``ValueError`` when a requested object was not defined by the notebook itself.
    """
    path = Path(path)
    names = list(names)
    module_name = f"notebook:{path.stem}"
    namespace: dict[str, Any] = {"__name__": module_name, **(extra_globals or {})}
    classes: set[str] = set()
    functions: set[str] = set()
    defined: list[str] = []

    trees = []
    for index, source in _code_cells(path):
        filename = f"{path.name}[cell {index}]"
        try:
            trees.append((filename, ast.parse(source, filename=filename)))
        except SyntaxError as err:
            raise SyntaxError(f"{filename} does not parse: {err}") from err
    own = {
        node.name for _, tree in trees for node in tree.body if isinstance(node, _DEFS)
    }

    for filename, tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if _bound_names(node) & (own | set(names)):
                    continue  # would shadow the notebook's own definitions
            elif isinstance(node, _DEFS):
                (classes if isinstance(node, ast.ClassDef) else functions).add(
                    node.name
                )
                defined.append(node.name)
            elif not _attaches_method(node, classes, functions):
                continue
            module = ast.Module(body=[node], type_ignores=[])
            # dont_inherit: compile the cell as the notebook would, without this
            # file's `from __future__ import annotations` (which would turn a
            # notebook dataclass's annotations into strings)
            exec(compile(module, filename, "exec", dont_inherit=True), namespace)

    missing = [n for n in names if n not in defined]
    if missing:
        raise KeyError(
            f"{path.name} does not define {missing}; it defines {sorted(set(defined))}"
        )
    found = {n: namespace[n] for n in names}
    for name, obj in found.items():
        if getattr(obj, "__module__", None) != module_name:
            raise ValueError(
                f"{name} in {path.name} was not defined by the notebook "
                f"(its module is {getattr(obj, '__module__', None)!r})"
            )
    return SimpleNamespace(**found)


def _parameters(obj: Any) -> list[tuple[str, Any, Any]]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(obj) and params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def assert_same_signature(notebook_obj: Any, package_obj: Any) -> None:
    """The notebook's function (or class constructor) takes the same parameters as
    the package's: names, order, kinds (positional/keyword-only) and defaults.
    Annotations are ignored (the chapters leave most of them out)."""
    ours, theirs = _parameters(notebook_obj), _parameters(package_obj)
    if ours != theirs:
        raise AssertionError(
            f"{getattr(package_obj, '__name__', package_obj)}: the notebook's "
            f"signature {ours} differs from the package's {theirs}"
        )


def assert_signature_extends(notebook_obj: Any, package_obj: Any) -> None:
    """The package's function takes the notebook's parameters first (names, kinds
    and defaults; the package may give a default where the notebook has none) and
    then only keyword-only parameters with defaults: hooks that later chapters use
    (a KV cache, a padding mask), which every call written the chapter's way skips."""
    ours, theirs = _parameters(notebook_obj), _parameters(package_obj)
    name = getattr(package_obj, "__qualname__", package_obj)
    head, extra = theirs[: len(ours)], theirs[len(ours) :]
    empty = inspect.Parameter.empty
    same_head = len(head) == len(ours) and all(
        (n, k) == (pn, pk) and d in (empty, pd)
        for (n, k, d), (pn, pk, pd) in zip(ours, head, strict=True)
    )
    if not same_head:
        raise AssertionError(
            f"{name}: the package's signature {theirs} does not start with the "
            f"notebook's {ours}"
        )
    for n, kind, default in extra:
        if kind is not inspect.Parameter.KEYWORD_ONLY or default is empty:
            raise AssertionError(
                f"{name}: the package's extra parameter {n!r} must be keyword-only "
                "with a default"
            )
