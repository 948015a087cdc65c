"""Code completion with the course GPT and with an n-gram model (Chapter 12).

Two measurements on Python source the models were not trained on:

* **next-line exact match**: given a module's source up to a line inside a function,
  does greedy decoding reproduce the next line (compared without surrounding
  whitespace)? :func:`next_line_items` makes the items, :func:`gpt_line` and
  :func:`greedy_line` decode a line with a GPT or with any next-token rule, and :func:`ngram_next_token` is the exact greedy
  rule of an :class:`llmbook.data.NGramLM`.
* **one-line bodies against doctests**: functions whose body is one line and whose
  docstring has examples; the model writes the body, and :func:`doctest_check`
  builds a script that runs the examples on it, which must run in a sandbox
  (:func:`llmbook.apps.sandbox.run_python`): the body is untrusted model output.
"""

from __future__ import annotations

import ast
import base64
import random
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "LineItem",
    "DoctestTask",
    "next_line_items",
    "first_line",
    "greedy_line",
    "gpt_line",
    "ngram_next_token",
    "doctest_tasks",
    "doctest_check",
    "FORBIDDEN_CALLS",
    "expression_check",
    "verify_exercise",
]


@dataclass(frozen=True)
class LineItem:
    """Source up to the end of a line (without its line break), and the next line."""

    module: str
    context: str
    target: str


def _function_lines(source: str) -> list[int]:
    """0-based numbers of the candidate target lines: code inside function bodies,
    not docstrings, blank lines or comments."""
    tree = ast.parse(source)
    docstring_lines: set[int] = set()
    body_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0]
            if ast.get_docstring(node) is not None:
                docstring_lines.update(range(first.lineno - 1, first.end_lineno))
            body_lines.update(range(node.body[0].lineno - 1, node.end_lineno))
    lines = source.split("\n")
    return sorted(
        i for i in body_lines - docstring_lines
        if i < len(lines) and len(lines[i].strip()) >= 8
        and not lines[i].strip().startswith("#")
    )  # fmt: skip


def next_line_items(
    sources: Sequence[str],
    modules: Sequence[str],
    n_items: int,
    seed: int = 0,
    max_context_chars: int = 1000,
) -> list[LineItem]:
    """`n_items` next-line items drawn evenly from the modules, deterministically.

    The context is at most the last `max_context_chars` characters before the line
    break that precedes the target (cut at a line start), see :func:`greedy_line`;
    the target is the line without its line breaks.
    """
    if len(sources) != len(modules):
        raise ValueError(
            f"sources and modules must have the same length: got {len(sources)} "
            f"and {len(modules)}"
        )
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    rng = random.Random(seed)
    pools = []
    for module, source in zip(modules, sources, strict=True):
        lines = source.split("\n")
        candidates = _function_lines(source)
        rng.shuffle(candidates)
        pools.append((module, lines, candidates))
    items: list[LineItem] = []
    while len(items) < n_items and any(c for _, _, c in pools):
        for module, lines, candidates in pools:
            if not candidates or len(items) >= n_items:
                continue
            i = candidates.pop()
            context = "\n".join(lines[:i])
            if len(context) > max_context_chars:
                cut = context[-max_context_chars:]
                context = cut[cut.find("\n") + 1 :]
            items.append(LineItem(module, context, lines[i]))
    return items


def first_line(
    tokens: Iterable[int],
    decode: Callable[[list[int]], str],
    stop_ids: Sequence[int] = (),
) -> str:
    """Read generated tokens until the text holds a whole new line; return that line.

    The prompt is expected to end *before* a line break: byte-level BPE merges a line
    break with the indentation after it (``"\n        "`` is one token), so a prompt
    that ended with a bare ``"\n"`` would show the model a token split it never saw
    in training. The model writes the line break and the line; reading stops at a
    second line break, at a token in `stop_ids`, or when `tokens` runs out. Returns
    the text between the first and second line break (empty when the model did not
    start a new line).
    """
    new: list[int] = []
    for token in tokens:
        if token in stop_ids:
            break
        new.append(token)
        text = decode(new)
        if "\n" in text and "\n" in text.split("\n", 1)[1]:
            break
    parts = decode(new).split("\n")
    return parts[1] if len(parts) > 1 else ""


def greedy_line(
    next_token: Callable[[list[int]], int],
    ids: list[int],
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 32,
    stop_ids: Sequence[int] = (),
) -> str:
    """:func:`first_line` of greedy decoding with a next-token rule ``ids -> id``."""

    def tokens() -> Iterator[int]:
        seq = list(ids)
        for _ in range(max_new_tokens):
            seq.append(next_token(seq))
            yield seq[-1]

    return first_line(tokens(), decode, stop_ids)


def gpt_line(
    model: torch.nn.Module,
    ids: list[int],
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 32,
    eos_id: int | None = None,
) -> str:
    """:func:`first_line` of a GPT's greedy decoding, with the KV cache
    (:func:`llmbook.decoding.stream`); the prompt is cut to the last
    ``context_length - max_new_tokens`` tokens."""
    from llmbook.decoding import SamplingConfig, stream

    keep = model.config.context_length - max_new_tokens
    if keep < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a context "
            f"of {model.config.context_length}"
        )
    device = next(model.parameters()).device
    x = torch.tensor([list(ids)[-keep:]], device=device)
    greedy = SamplingConfig(temperature=0.0)
    with torch.no_grad():
        tokens = (
            int(t[0]) for t in stream(model, x, max_new_tokens, greedy, eos_id=eos_id)
        )
        return first_line(tokens, decode, [] if eos_id is None else [eos_id])


def ngram_next_token(lm) -> Callable:
    """The exact greedy rule of a fitted Kneser-Ney :class:`NGramLM`, fast.

    ``max(lm.distribution(ctx), key=...)`` scores every token of the vocabulary.
    Only a few need scoring: a token never seen after any suffix of the context gets
    the same back-off weight times its unigram probability, so the best of those is
    the most frequent one (in continuation counts). The candidates are therefore the
    tokens seen after some suffix of the context, plus the unigram favourites.
    Ties go to the smallest token (by ``str``), as in :func:`brute force
    <max>` over a sorted vocabulary. Returns ``"</s>"`` when the end is likeliest.
    """
    if lm.smoothing != "kneser_ney":
        raise ValueError(
            f"ngram_next_token needs kneser_ney smoothing, got {lm.smoothing!r}"
        )
    lm._check_fitted()
    excluded = {"<s>", "<UNK>"}
    cont = lm._cont.get((), {})
    by_count = sorted(
        (w for w in lm.vocab if w not in excluded),
        key=lambda w: (-cont.get(w, 0), str(w)),
    )

    def next_token(ids: list[int]):
        context = tuple(lm._lookup(t) for t in ids[-(lm.order - 1) :])
        seen: set = set()
        for m in range(1, len(context) + 1):
            seen.update(lm._counts.get(context[-m:], ()))
        seen -= excluded
        # the best unseen token is among the first len(seen) + 1 by count, plus ties
        extra = by_count[: len(seen) + 1]
        last = cont.get(extra[-1], 0)
        extra += [w for w in by_count[len(seen) + 1 :] if cont.get(w, 0) == last]
        candidates = seen | set(extra)
        return min(candidates, key=lambda w: (-lm.prob(w, context), str(w)))

    return next_token


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
