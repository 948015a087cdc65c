"""Model-written code, checked (Chapter 12).

* **one-line bodies against doctests**: functions whose body is one line and whose
  docstring has examples; the model writes the body, and :func:`doctest_check`
  builds a script that runs the examples on it, which must run in a sandbox
  (:func:`llmbook.apps.sandbox.run_python`): the body is untrusted model output.
* **generated exercises**: :func:`verify_exercise` keeps an expression only if
  :func:`expression_check` accepts it statically and it runs in the sandbox with a
  short printed result, the answer key.
"""

from __future__ import annotations

import ast
import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DoctestTask",
    "doctest_tasks",
    "doctest_check",
    "expression_check",
    "verify_exercise",
    "FORBIDDEN_CALLS",
]


@dataclass(frozen=True)
class DoctestTask:
    """A function with doctest examples whose body is one line."""

    module: str
    name: str
    header: str  # the def line(s) and the docstring, ending with a newline
    body: str  # the reference body line, with its indentation
    docstring: str
    source: str = field(default="", repr=False)  # the module's snapshot source


def doctest_tasks(sources: Sequence[str], modules: Sequence[str]) -> list[DoctestTask]:
    """Module-level functions with ``>>>`` examples and a body of one line.

    Each task keeps its module's `source` text, so that :func:`doctest_check` runs
    the examples against that text (the course's CPython 3.11.7 snapshot) and not
    against whatever the running interpreter's standard library holds: a helper such
    as ``zipfile._parents`` exists in 3.11 and is gone in 3.12.
    """
    tasks = []
    for module, source in zip(modules, sources, strict=True):
        lines = source.split("\n")
        for node in ast.parse(source).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc or ">>>" not in doc or len(node.body) != 2:
                continue
            stmt = node.body[1]
            if stmt.lineno != stmt.end_lineno:
                continue
            start = (node.decorator_list[0] if node.decorator_list else node).lineno - 1
            header = "\n".join(lines[start : node.body[0].end_lineno]) + "\n"
            tasks.append(
                DoctestTask(
                    module, node.name, header, lines[stmt.lineno - 1], doc, source
                )
            )
    return tasks


def doctest_check(task: DoctestTask, body: str) -> str:
    """A script that runs the task's module source (the snapshot's text, shipped
    inside the script compressed) as a fresh module, defines the function with
    `body` in that namespace, runs the docstring's examples on it, and prints
    ``{"attempted", "failed"}``. Nothing is imported from the running interpreter's
    copy of the module, so the result is the same on Python 3.10 to 3.13.

    Run it with :func:`llmbook.apps.sandbox.run_python`, never with ``exec``.
    """
    if not task.source:
        raise ValueError(
            f"task {task.module}.{task.name} has no module source: build it with "
            "doctest_tasks"
        )
    code = task.header + body + "\n"
    blob = base64.b64encode(zlib.compress(task.source.encode("utf-8"), 9)).decode()
    return (
        "import base64, doctest, json, sys, types, zlib\n"
        f"mod = types.ModuleType({task.module!r})\n"
        f"sys.modules[{task.module!r}] = mod\n"
        f"text = zlib.decompress(base64.b64decode({blob!r})).decode('utf-8')\n"
        f"exec(compile(text, '<snapshot {task.module}>', 'exec'), mod.__dict__)\n"
        "ns = dict(vars(mod))\n"
        f"exec(compile({code!r}, '<candidate>', 'exec'), ns)\n"
        "flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE\n"
        "runner = doctest.DocTestRunner(verbose=False, optionflags=flags)\n"
        f"test = doctest.DocTestParser().get_doctest({task.docstring!r}, ns, "
        f"{task.name!r}, '<candidate>', 0)\n"
        "r = runner.run(test, out=lambda s: None)\n"
        "print(json.dumps({'attempted': r.attempted, 'failed': r.failed}))\n"
    )


#: Builtins an exercise may not call: they read, write, import, or run other code.
FORBIDDEN_CALLS = frozenset(
    {"open", "exec", "eval", "compile", "input", "breakpoint", "exit", "quit", "help",
     "globals", "locals", "vars", "getattr", "setattr", "delattr", "memoryview"}
)  # fmt: skip


def expression_check(expression: str) -> str | None:
    """A script that prints ``repr(eval(expression))``, or None when the text is not
    one Python expression, or uses what an exercise should not: private or dunder
    names and attributes, lambdas, assignment expressions, or a builtin of
    :data:`FORBIDDEN_CALLS`. (A static filter for *exercises*; the sandbox is what
    makes running the rest safe.)"""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Lambda, ast.NamedExpr, ast.Await)):
            return None
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return None
        if isinstance(node, ast.Name) and (
            node.id.startswith("_") or node.id in FORBIDDEN_CALLS
        ):
            return None
    return f"print(repr(eval({expression.strip()!r}, {{}})))"


def verify_exercise(expression: str, timeout: float = 2.0, max_chars: int = 40):
    """Check a proposed "what does this evaluate to?" exercise.

    Returns ``(status, answer)``: status is ``"not an expression"``, ``"refused"``
    (by :func:`expression_check`), ``"error"`` (raised, timed out, or printed
    nothing), ``"answer too long"`` (more than `max_chars` characters or more than
    one line) or ``"valid"``, and answer is the ``repr`` of the value for a valid
    exercise, else None. The expression runs in :func:`llmbook.apps.sandbox.run_python`.
    """
    from llmbook.apps.sandbox import run_python

    try:
        ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        return "not an expression", None
    script = expression_check(expression)
    if script is None:
        return "refused", None
    result = run_python(script, timeout=timeout)
    answer = result.stdout.strip()
    if not result.ok or not answer:
        return "error", None
    if len(answer) > max_chars or "\n" in answer:
        return "answer too long", None
    return "valid", answer
