"""The lab's own tests, split at their asserts into a probe and a trusted check.

An otter test function calls the student's code and then asserts things about what it
got back. Run as it is, in the student's process, its verdict can be forged. Here each
``assert cond, msg`` (and each ``raise AssertionError(msg)``) is rewritten into a call
that *records* instead of judging:

- in the **sandbox** (the student's process) the test runs as written up to each
  assert; there the recorder evaluates the *leaves* of ``cond``: the smallest
  sub-expressions that touch the student's objects (``mine(x)``, ``ln.weight``) or
  that hold data (a tensor ``s``, a float ``ppl``). Leaves are exported as data.
- on the **trusted side** ``cond`` itself is evaluated with those leaves substituted,
  by the grader's own Python and PyTorch, which the student never touched. Every leaf
  must also equal the value the reference solution produced at the same place (see
  `llmbook.grading.scoring`), so values a test computes itself (an ``expected``
  tensor from a library function) cannot be swapped for the student's.

Which sub-expressions are leaves is decided once, when the lab is built, by running the
tests on the reference solution (``classify``); grading then evaluates exactly those
(``evaluate_leaves``). Only the standard library is used here: this module runs inside
the sandbox too. Which statements of a test the sandbox runs at all is decided when
the lab is built, by :mod:`llmbook.grading.slicing`.
"""

from __future__ import annotations

import ast
import builtins
import copy
import importlib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llmbook.grading.codec import Opaque

__all__ = [
    "AssertRewriter",
    "AssertSite",
    "TestDef",
    "classify",
    "evaluate_leaves",
    "instrument",
    "parse_test_file",
    "trusted_eval",
]

RECORD = "__llmbook_record__"
ALLOWED_MODULES = ("torch", "math", "collections", "numpy", "itertools", "operator")


@dataclass
class TestDef:
    """One otter test function, as the autograder zip stores it."""

    name: str
    question: str
    hidden: bool
    params: list[str]
    source: str  # the function, without its decorator


@dataclass
class AssertSite:
    """One assert (or ``raise AssertionError``) of a test, numbered in source order."""

    index: int
    cond: ast.expr
    line: int
    message: str  # the message's source text, for reports when it cannot be shown
    fail: bool = False  # a ``raise AssertionError``: reaching it fails the test
    text: str = ""  # the message as the student sees it: its fixed text, `…` for values


def message_text(msg: ast.expr | None) -> str:
    """An assert's message rendered from its source alone, never from values.

    A string stays as it is; an f-string keeps its fixed text with ``…`` for each
    value; anything else (a variable, a call) becomes ``…``. Nothing computed in the
    sandbox reaches the student's feedback this way.
    """
    if msg is None:
        return ""
    if isinstance(msg, ast.Constant) and isinstance(msg.value, str):
        return msg.value
    if isinstance(msg, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else "…" for v in msg.values
        )
    if isinstance(msg, ast.BinOp) and isinstance(msg.op, ast.Add):
        return message_text(msg.left) + message_text(msg.right)
    return "…"


def parse_test_file(text: str, question: str) -> list[TestDef]:
    """The ``@test_case`` functions of one otter test file (``tests/q1.py``)."""
    tests = []
    for node in ast.parse(text).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        hidden = False
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call):
                for kw in deco.keywords:
                    if kw.arg == "hidden" and isinstance(kw.value, ast.Constant):
                        hidden = bool(kw.value.value)
        fn = copy.deepcopy(node)
        fn.decorator_list = []
        tests.append(
            TestDef(
                name=node.name,
                question=question,
                hidden=hidden,
                params=[a.arg for a in node.args.args],
                source=ast.unparse(fn),
            )
        )
    return tests


class AssertRewriter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.sites: list[AssertSite] = []

    def _record(self, node: ast.stmt, cond: ast.expr, msg: ast.expr | None, fail: bool):
        site = AssertSite(
            index=len(self.sites),
            cond=cond,
            line=node.lineno,
            message=ast.unparse(msg) if msg is not None else "",
            fail=fail,
            text=message_text(msg),
        )
        self.sites.append(site)
        call = ast.Call(
            func=ast.Name(RECORD, ast.Load()),
            args=[
                ast.Constant(site.index),
                ast.Call(ast.Name("locals", ast.Load()), [], []),
            ],
            keywords=[],
        )
        return ast.Return(call) if fail else ast.Expr(call)

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        return self._record(node, node.test, node.msg, fail=False)

    def visit_Raise(self, node: ast.Raise) -> ast.stmt:
        exc = node.exc
        if (
            isinstance(exc, ast.Call)
            and isinstance(exc.func, ast.Name)
            and exc.func.id == "AssertionError"
        ):
            msg = exc.args[0] if exc.args else None
            return self._record(node, ast.Constant(False), msg, fail=True)
        return node


def instrument(source: str) -> tuple[str, list[AssertSite]]:
    """The test's source with every assert turned into a recorder call."""
    tree = ast.parse(source)
    rewriter = AssertRewriter()
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    return ast.unparse(tree), rewriter.sites


# --- paths: where a leaf sits inside an assert's condition ------------------------


def _children(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    for name, value in ast.iter_fields(node):
        if name == "ctx":
            continue
        if isinstance(value, ast.AST):
            yield name, value
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    yield f"{name}.{i}", item


def node_at(root: ast.AST, path: str) -> ast.AST:
    """The node that `path` (as made by `classify`) names; KeyError if none."""
    node = root
    for step in path.split("/") if path else []:
        node = dict(_children(node))[step]
    return node


def _replace(root: ast.expr, path: str, new: ast.expr) -> ast.expr:
    if not path:
        return new
    *head, last = path.split("/")
    parent = node_at(root, "/".join(head))
    name, _, index = last.partition(".")
    if index:
        getattr(parent, name)[int(index)] = new
    else:
        setattr(parent, name, new)
    return root


def _free_names(node: ast.AST) -> set[str]:
    loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    stores = {
        n.id
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    args = {
        a.arg for n in ast.walk(node) if isinstance(n, ast.Lambda) for a in n.args.args
    }
    return loads - stores - args


# --- classification (on the reference solution, when the lab is built) -----------

_SCOPES = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp, ast.Lambda)


def is_data(value: Any, depth: int = 0) -> bool:
    """Whether `value` can cross the boundary as data (see `llmbook.grading.codec`)."""
    if depth > 20:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    torch = _torch()
    if torch is not None and isinstance(value, (torch.Tensor, torch.Size, torch.dtype)):
        return True
    if isinstance(value, dict):
        return all(
            is_data(k, depth + 1) and is_data(v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(is_data(v, depth + 1) for v in value)
    return False


def is_stateful(value: Any, depth: int = 0) -> bool:
    """Whether the student's code may change `value` as its job: an object with state
    (a model, an optimizer), a tensor that requires grad (a parameter), or a container
    holding one. Plain data, functions, classes and modules are not."""
    if depth > 3:
        return False
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        return bool(value.requires_grad)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(is_stateful(v, depth + 1) for v in list(value)[:1000])
    if isinstance(value, dict):
        return any(is_stateful(v, depth + 1) for v in list(value.values())[:1000])
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return False
    if isinstance(
        value,
        (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type),
    ) or isinstance(value, types.ModuleType):
        return False
    if torch is not None and isinstance(value, (torch.Size, torch.dtype)):
        return False
    return True


def _torch() -> Any:
    import sys

    return sys.modules.get("torch")


def ref_for(name: str, value: Any) -> str | None:
    """How the trusted side names `value` itself (a module, a library class), or None."""
    if getattr(builtins, name, None) is value:
        return f"builtin:{name}"
    if isinstance(value, types.ModuleType):
        if value.__name__.split(".")[0] in ALLOWED_MODULES:
            return f"module:{value.__name__}"
        return None
    module, qualname = (
        getattr(value, "__module__", None),
        getattr(value, "__qualname__", None),
    )
    if not (isinstance(module, str) and isinstance(qualname, str)) or "<" in qualname:
        return None
    if module.split(".")[0] not in ALLOWED_MODULES:
        return None
    try:
        return (
            f"attr:{module}:{qualname}"
            if resolve_ref(f"attr:{module}:{qualname}") is value
            else None
        )
    except Exception:
        return None


def resolve_ref(ref: str) -> Any:
    """The object a `ref_for` string names, on the trusted side (allow-listed only)."""
    kind, _, rest = ref.partition(":")
    if kind == "builtin":
        return getattr(builtins, rest)
    module, _, qualname = rest.partition(":")
    if module.split(".")[0] not in ALLOWED_MODULES:
        raise ValueError(f"{module} is not an allowed module")
    obj: Any = importlib.import_module(module)
    if kind == "module":
        return obj
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Classified:
    leaves: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


def _eval(node: ast.expr, env: dict[str, Any]) -> Any:
    body = copy.deepcopy(node)
    if isinstance(body, ast.GeneratorExp):  # a generator is not data; its items are
        body = ast.ListComp(elt=body.elt, generators=body.generators)
    code = compile(ast.fix_missing_locations(ast.Expression(body)), "<assert>", "eval")
    return eval(code, dict(env))  # one namespace, so comprehensions see every name


def classify(cond: ast.expr, env: dict[str, Any]) -> Classified:
    """Find the leaves of `cond` by running it in `env` (the reference solution's run).

    A leaf is a name holding data, or the smallest sub-expression that involves a
    non-data object (the student's module, a function) and evaluates to data.
    """
    out = Classified()
    ok = _classify(cond, env, "", frozenset(), out)
    if not ok:
        raise ValueError(f"cannot check `{ast.unparse(cond)}` from data")
    return out


def _classify(
    node: ast.AST, env: dict[str, Any], path: str, bound: frozenset, out: Classified
) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        if node.id in bound:
            return True
        value = env[node.id] if node.id in env else getattr(builtins, node.id)
        if is_data(value):
            out.leaves[path] = value
            return True
        ref = ref_for(node.id, value)
        if ref is not None:
            out.refs[node.id] = ref
            return True
        return False
    inner = bound
    if isinstance(node, _SCOPES):
        inner = bound | {
            n.id
            for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        if isinstance(node, ast.Lambda):
            inner = inner | {a.arg for a in node.args.args}
    ok = True
    for name, child in _children(node):
        if isinstance(child, ast.comprehension) or isinstance(child, ast.keyword):
            parts = list(_children(child))
        else:
            parts = [("", child)]
        for sub, grand in parts:
            if isinstance(child, ast.comprehension) and sub == "target":
                continue
            child_path = "/".join(p for p in (path, name, sub) if p)
            ok = _classify(grand, env, child_path, inner, out) and ok
    if ok:
        return True
    if _free_names(node) & bound:
        return False  # needs a name bound further out: evaluate an ancestor instead
    value = _eval(node, env)
    if not is_data(value):
        return False
    prefix = f"{path}/" if path else ""
    for key in [k for k in out.leaves if k.startswith(prefix) and k != path]:
        del out.leaves[key]
    out.leaves[path] = value
    return True


def evaluate_leaves(cond: ast.expr, paths: list[str], env: dict[str, Any]) -> dict:
    """Evaluate the given leaves of `cond` in `env` (a student's run).

    Returns path -> value, or path -> BaseException when evaluating it raised.
    """
    values: dict[str, Any] = {}
    for path in paths:
        try:
            values[path] = _eval(node_at(cond, path), env)
        except BaseException as exc:  # the student's code raised
            values[path] = exc
    return values


def evaluate_nodes(nodes: dict[str, ast.expr], env: dict[str, Any]) -> dict:
    """Evaluate leaf expressions (path -> node) in `env`, in the sandbox.

    Returns path -> value, or path -> BaseException when evaluating it raised.
    """
    values: dict[str, Any] = {}
    for path, node in nodes.items():
        try:
            values[path] = _eval(node, env)
        except BaseException as exc:  # the student's code raised
            values[path] = exc
    return values


def trusted_eval(
    cond: ast.expr, leaves: dict[str, Any], refs: dict[str, str], missing: Any
) -> bool:
    """Evaluate `cond` with `leaves` substituted, in the grader's own interpreter.

    `leaves` maps a path to a value; a path with no value gets `missing` (an object
    whose use raises). `cond` comes from the autograder zip, never from the sandbox.
    """
    tree = copy.deepcopy(cond)
    for path in sorted(leaves, key=len, reverse=True):
        call = ast.Call(ast.Name("__leaf__", ast.Load()), [ast.Constant(path)], [])
        tree = _replace(tree, path, call)
    namespace: dict[str, Any] = {name: resolve_ref(ref) for name, ref in refs.items()}

    def leaf(path: str) -> Any:
        value = leaves.get(path, missing)
        if isinstance(value, Opaque):
            raise AssertionError(f"not data: {value.kind}")
        return value

    namespace["__leaf__"] = leaf
    code = compile(ast.fix_missing_locations(ast.Expression(tree)), "<check>", "eval")
    return bool(eval(code, namespace))
