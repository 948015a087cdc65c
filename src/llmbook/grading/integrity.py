"""Integrity flags: what an answer calls, read from its code (AST), never run.

For each question, the *answer code* is the notebook's top-level definitions of the
names the question's tests take (``attention``, ``Adam``) plus every top-level function
or class they use, transitively. It is flagged when it

- uses the ``llmbook`` package (the course's reference implementations): an import
  from it, an attribute of it, or its name in a string;
- calls a library function or class that the question forbids (see
  `llmbook.grading.labs.FORBIDDEN`), by attribute, by imported name or by string.

Anywhere in the notebook, code that reaches into the grader is flagged too:
monkeypatching ``torch``/``numpy``/``math``/``unittest.mock``, frame or object
introspection (``sys._getframe``, ``inspect``, ``gc``, ``ctypes``), ``os._exit``,
``os.kill`` and ``/proc``, dynamic code and names (``exec``, ``eval``, ``compile``,
``__import__``, ``getattr`` with a computed name, ``vars()``/``__dict__``/
``globals()``), ``sys.modules``, ``subprocess``, and frame objects (``tb_frame``,
``f_locals``, ``f_back``).

These flags are **hints for the instructor, not a defence**: code is easily written so
that no rule matches (a name built from pieces, a decoded string passed to ``exec``).
What makes grades unforgeable is elsewhere: the sandbox, the probes that carry no
expected values, and the scoring on the trusted side (see `llmbook.grading`). A
flag does not change the score: the instructor reads the ``flags`` column and decides.
Code too large or too deep to analyse gets a flag saying so.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from llmbook.grading import labs
from llmbook.grading.harness import strip_ipython

__all__ = ["integrity_flags"]

PATCHABLE_ROOTS = {
    "torch",
    "F",
    "nn",
    "np",
    "numpy",
    "math",
    "mock",
    "unittest",
    "otter",
}
INTROSPECTION_MODULES = {
    "inspect",
    "gc",
    "ctypes",
    "importlib",
    "builtins",
    "signal",
    "base64",
    "marshal",
    "pickle",
}
FRAME_ATTRIBUTES = {
    "tb_frame",
    "f_locals",
    "f_globals",
    "f_back",
    "gi_frame",
    "cr_frame",
    "__traceback__",
    "__dict__",
    "__globals__",
    "__code__",
    "__closure__",
    "__subclasses__",
}


def _imports(trees: Iterable[ast.AST]) -> dict[str, str]:
    """Name bound by an import -> the dotted thing it names."""
    bound: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    bound[name] = alias.name if alias.asname else name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _uses(nodes: list[ast.AST], imports: dict[str, str], forbidden: frozenset[str]):
    found: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _imports([node])
                for origin in names.values():
                    if origin.split(".")[0] == "llmbook":
                        found.add(f"uses llmbook ({origin})")
                    if origin.rsplit(".", 1)[-1] in forbidden:
                        found.add(f"calls {origin.rsplit('.', 1)[-1]}")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                origin = imports.get(node.id, "")
                if origin.split(".")[0] == "llmbook":
                    found.add(f"uses llmbook ({origin})")
                if origin and origin.rsplit(".", 1)[-1] in forbidden:
                    found.add(f"calls {origin.rsplit('.', 1)[-1]}")
            elif isinstance(node, ast.Attribute) and node.attr in forbidden:
                found.add(f"calls {node.attr}")
            if isinstance(node, ast.Attribute) and node.attr == "modules":
                if _root(node) == "sys" or imports.get(_root(node) or "") == "sys":
                    found.add("uses sys.modules")
            if isinstance(node, ast.Name) and (
                node.id == "subprocess"
                or imports.get(node.id, "").split(".")[0] == "subprocess"
                or imports.get(node.id, "") in ("os.system", "os.popen")
            ):
                found.add("runs a subprocess")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if "llmbook" in node.value:
                    found.add("uses llmbook (by name in a string)")
                if node.value.strip() in forbidden:
                    found.add(f"calls {node.value.strip()} (by name in a string)")
    return found


def _tampering(trees: list[ast.AST], imports: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = (
                    node.targets
                    if isinstance(node, (ast.Assign, ast.Delete))
                    else [node.target]
                )
                for target in targets:
                    root = _root(target) if isinstance(target, ast.Attribute) else None
                    if root in PATCHABLE_ROOTS or imports.get(root or "", "").split(
                        "."
                    )[0] in ("torch", "numpy", "math", "unittest", "otter"):
                        found.add(f"replaces {ast.unparse(target)}")
            elif isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if (
                    func == "setattr"
                    and node.args
                    and _root(node.args[0]) in PATCHABLE_ROOTS
                ):
                    found.add(f"replaces an attribute of {ast.unparse(node.args[0])}")
                if func in (
                    "sys._getframe",
                    "sys.settrace",
                    "sys.setprofile",
                    "os._exit",
                    "os.kill",
                    "os.killpg",
                ):
                    found.add(f"calls {func}")
                if func.startswith("mock.patch") or func.startswith(
                    "unittest.mock.patch"
                ):
                    found.add("patches with unittest.mock")
                origin = imports.get(func, "")
                if origin in ("os.kill", "os.killpg", "os._exit", "sys._getframe"):
                    found.add(f"calls {origin} (as {func})")
                if func in ("exec", "eval", "compile", "__import__", "vars", "globals"):
                    found.add(f"calls {func}")
                if func == "getattr" and (
                    len(node.args) < 2 or not isinstance(node.args[1], ast.Constant)
                ):
                    found.add("calls getattr with a computed name")
            elif isinstance(node, ast.Attribute) and node.attr in FRAME_ATTRIBUTES:
                found.add(f"uses introspection ({node.attr})")
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "modules"
                and node.attr in ("pop", "setdefault", "update", "__setitem__")
            ):
                found.add(f"uses sys.modules.{node.attr}")
            elif (
                isinstance(node, ast.Subscript)
                and ast.unparse(node.value) == "sys.modules"
            ):
                found.add("edits sys.modules")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if "/proc" in node.value:
                    found.add("reads /proc")
    for origin in imports.values():
        if origin.split(".")[0] in INTROSPECTION_MODULES:
            found.add(f"imports {origin.split('.')[0]}")
    return found


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _own_nodes(scope: ast.AST):
    """The nodes of ``scope``'s body, not descending into nested functions."""
    body = scope.body if isinstance(scope.body, list) else [scope.body]
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _SCOPES):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _free_names(node: ast.AST, enclosing: frozenset[str] = frozenset()) -> set[str]:
    """Names ``node`` reads that are not its own locals: a function's parameters
    and the names it assigns are local, so a top-level definition that happens to
    share a name with one of them is not part of the answer."""
    if not isinstance(node, _SCOPES):  # a class or a top-level assignment
        found: set[str] = set()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _SCOPES):
                found |= _free_names(child, enclosing)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
                found.add(child.id)
            else:
                found |= _free_names(child, enclosing)
        return found
    args = node.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    found = set()
    for default in [*args.defaults, *args.kw_defaults]:  # evaluated outside
        if default is not None:
            found |= _free_names(ast.Expression(default), enclosing)
    if not isinstance(node, ast.Lambda):
        for decorator in node.decorator_list:
            found |= _free_names(ast.Expression(decorator), enclosing)
    own = list(_own_nodes(node))
    declared = {
        n for g in own if isinstance(g, ast.Global | ast.Nonlocal) for n in g.names
    }
    local = {a.arg for a in params}
    local |= {
        n.id for n in own if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    local |= {n.name for n in own if isinstance(n, (*_SCOPES[:2], ast.ClassDef))}
    local -= declared
    inner = enclosing | local
    for child in own:
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
            if child.id not in inner:
                found.add(child.id)
        elif isinstance(child, _SCOPES):
            found |= _free_names(child, frozenset(inner))
    return found


def _top_level(body: list[ast.stmt]):
    """Statements at module level, also inside ``if``/``try``/``with``/``for`` blocks
    (a definition inside ``if True:`` is still a definition of the notebook)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
            for field in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(node, field, []) or [])
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def integrity_flags(
    cells: list[dict], lab: str, questions: dict[str, list[str]]
) -> list[str]:
    """Flags for one notebook: ``"q4: calls scaled_dot_product_attention"``, ...

    `cells` are the code cells (``source``); `questions` maps each question to the
    names its tests take.
    """
    trees: list[ast.Module] = []
    for cell in cells:
        try:
            trees.append(ast.parse(strip_ipython(cell["source"])))
        except (SyntaxError, ValueError):
            continue
    imports = _imports(trees)
    defs: dict[str, ast.AST] = {}
    for tree in trees:
        for node in _top_level(tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = node
            elif isinstance(node, ast.Assign):  # f = llmbook.attention.attention
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        defs[target.id] = node
    flags: list[str] = []
    for question, names in questions.items():
        todo, seen = [n for n in names if n in defs], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += [n for n in _free_names(defs[name]) if n in defs and n not in seen]
        nodes = [defs[n] for n in sorted(seen)]
        for use in sorted(_uses(nodes, imports, labs.forbidden_names(lab, question))):
            flags.append(f"{question}: {use}")
    flags += [f"notebook: {t}" for t in sorted(_tampering(trees, imports))]
    return flags
