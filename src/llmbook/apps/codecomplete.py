"""Code completion with the course GPT and with an n-gram model (Chapter 12).

Two measurements on Python source the models were not trained on:

* **the next line**: given a module's source up to a line inside a function, what
  does the model write next? :func:`next_line_items` makes the items,
  :func:`gpt_line` and :func:`greedy_line` decode a line with a GPT or with any
  next-token rule, and :func:`ngram_next_token` is the exact greedy rule of an
  :class:`llmbook.data.NGramLM`. :func:`score_item` scores an item with the measures
  of code-completion benchmarks (CodeXGLUE's line- and token-level completion):
  exact match and :func:`edit_similarity` of the greedy line, teacher-forced
  next-token accuracy (:func:`gpt_next_tokens`, :func:`rule_next_tokens`), and
  identifier completion (:func:`identifier_prompts`, :func:`completes_identifier`);
  :func:`paired_measures` compares two models with paired bootstrap intervals.
* **one-line bodies against doctests**: functions whose body is one line and whose
  docstring has examples; the model writes the body, and :func:`doctest_check`
  builds a script that runs the examples on it, which must run in a sandbox
  (:func:`llmbook.apps.sandbox.run_python`): the body is untrusted model output.
"""

from __future__ import annotations

import ast
import base64
import keyword
import math
import random
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmbook.metrics.statistics import PairedResult, paired_bootstrap

__all__ = [
    "LineItem",
    "DoctestTask",
    "next_line_items",
    "first_line",
    "line_prompt",
    "rule_tokens",
    "greedy_line",
    "gpt_tokens",
    "gpt_line",
    "ngram_next_token",
    "lcs_length",
    "edit_similarity",
    "identifiers",
    "identifier_prompts",
    "completes_identifier",
    "line_tokens",
    "gpt_next_tokens",
    "rule_next_tokens",
    "Completer",
    "LineScores",
    "score_item",
    "MEASURES",
    "item_measures",
    "paired_measures",
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
    skip_lines: int = 0,
) -> str:
    """Read generated tokens until the text holds a whole new line; return that line.

    The prompt is expected to end *before* a line break: byte-level BPE merges a line
    break with the indentation after it (``"\n        "`` is one token), so a prompt
    that ended with a bare ``"\n"`` would show the model a token split it never saw
    in training. The model writes the line break and the line; reading stops at the
    next line break, at a token in `stop_ids`, or when `tokens` runs out. Returns
    the text between the first and second line break (empty when the model did not
    start a new line). With `skip_lines` = k, the model is expected to write k
    (blank) lines first, and the line returned is the one after the (k + 1)-th line
    break: a prompt cut before the blank lines that precede the target line.
    """
    if skip_lines < 0:
        raise ValueError(f"skip_lines must be >= 0, got {skip_lines}")
    new: list[int] = []
    for token in tokens:
        if token in stop_ids:
            break
        new.append(token)
        if decode(new).count("\n") > skip_lines + 1:
            break
    parts = decode(new).split("\n")
    return parts[skip_lines + 1] if len(parts) > skip_lines + 1 else ""


def line_prompt(context: str) -> tuple[str, int]:
    """The prompt for the line after `context`, and the number of blank lines the
    model must write before it (`skip_lines` of :func:`first_line`).

    A context that ends with blank lines (the target follows an empty line) would end
    the prompt with a bare line break; it is cut before them instead, like every
    other prompt of this module (trailing whitespace goes too).
    """
    prompt = context.rstrip()
    return prompt, context[len(prompt) :].count("\n")


def rule_tokens(
    next_token: Callable[[list[int]], int], ids: Sequence[int], max_new_tokens: int
) -> Iterator[int]:
    """Greedy decoding with a next-token rule ``ids -> id``: yields up to
    `max_new_tokens` tokens, each appended to the sequence the rule sees next."""
    seq = list(ids)
    for _ in range(max_new_tokens):
        seq.append(next_token(seq))
        yield seq[-1]


def greedy_line(
    next_token: Callable[[list[int]], int],
    ids: list[int],
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 32,
    stop_ids: Sequence[int] = (),
) -> str:
    """:func:`first_line` of greedy decoding with a next-token rule ``ids -> id``."""
    return first_line(rule_tokens(next_token, ids, max_new_tokens), decode, stop_ids)


def gpt_tokens(
    model: torch.nn.Module,
    ids: Sequence[int],
    max_new_tokens: int,
    eos_id: int | None = None,
) -> Iterator[int]:
    """A GPT's greedy continuation of `ids`, token by token, with the KV cache
    (:func:`llmbook.decoding.stream`); the prompt is cut to its last
    ``context_length - max_new_tokens`` tokens, so that the whole continuation is
    decoded with the cache. Stops after `eos_id` (which it yields)."""
    keep = model.config.context_length - max_new_tokens
    if keep < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a context "
            f"of {model.config.context_length}"
        )
    if not ids:
        raise ValueError("the prompt is empty: a GPT needs at least one token")
    return _gpt_stream(model, list(ids)[-keep:], max_new_tokens, eos_id)


@torch.no_grad()
def _gpt_stream(model, ids: list[int], max_new_tokens: int, eos_id: int | None):
    from llmbook.decoding import SamplingConfig, stream

    x = torch.tensor([ids], device=next(model.parameters()).device)
    greedy = SamplingConfig(temperature=0.0)
    for t in stream(model, x, max_new_tokens, greedy, eos_id=eos_id):
        yield int(t[0])
        if eos_id is not None and int(t[0]) == eos_id:
            return


def gpt_line(
    model: torch.nn.Module,
    ids: list[int],
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 32,
    eos_id: int | None = None,
) -> str:
    """:func:`first_line` of a GPT's greedy decoding (:func:`gpt_tokens`)."""
    tokens = gpt_tokens(model, ids, max_new_tokens, eos_id)
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


# --- measures of code completion -----------------------------------------------------


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of `a` and `b` (characters of two
    strings, or any sequences of hashable items).

    Bit-parallel (Allison and Dix 1986; Hyyrö 2004): bit ``i`` of ``v`` is 0 where
    the LCS of ``a[: i + 1]`` and the part of `b` read so far grew at ``a[i]``, and
    each item of `b` updates all of them with one addition. The LCS length is the
    number of 0 bits among the ``len(a)`` lowest. ``O(len(a) * len(b) / 64)``
    machine words, against ``O(len(a) * len(b))`` Python steps for the textbook table.
    """
    if not a or not b:
        return 0
    masks: dict = {}
    for i, item in enumerate(a):
        masks[item] = masks.get(item, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for item in b:
        u = v & masks.get(item, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def edit_similarity(prediction: str, reference: str) -> float:
    """The edit similarity of CodeXGLUE's line completion, 0 to 100.

    CodeXGLUE scores a completed line with ``fuzz.ratio(pred, gt)`` (fuzzywuzzy backed
    by python-Levenshtein; rapidfuzz's ``fuzz.ratio`` is the same measure): the
    normalised *Indel* similarity, where only insertions and deletions count (a
    substitution costs two)::

        100 * (1 - indel / (len(a) + len(b))) = 100 * 2 * LCS(a, b) / (len(a) + len(b))

    with lengths in characters (code points). Two empty strings score 100, as in
    rapidfuzz. fuzzywuzzy rounds each score to an integer and scores 0 when either
    string is empty; we keep the exact value. Strip the lines first, as CodeXGLUE's
    evaluator does: indentation is not part of the comparison.
    """
    total = len(prediction) + len(reference)
    if total == 0:
        return 100.0
    return 100.0 * 2 * lcs_length(prediction, reference) / total


_LEXEME = re.compile(
    r"""(?P<comment>\#)
      | (?P<string>(?:[rRbBuUfF]{1,2})?(?:'''|\"\"\"|'|\"))
      | (?P<number>\.?\d[\w.]*)
      | (?P<name>[^\W\d]\w*)""",
    re.X,
)


def _string_end(line: str, i: int, quote: str) -> int:
    """Index after the string literal whose body starts at `i`, or the line's end
    (a string that goes on past the line)."""
    while i < len(line):
        if line[i] == "\\":  # an escaped character, raw strings included
            i += 2
        elif line.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    return len(line)


def identifiers(line: str) -> list[tuple[int, str]]:
    """(character offset, name) of every identifier in one line of Python source.

    An identifier is a letter or underscore and then letters, digits and
    underscores (Unicode letters included, as in Python); keywords
    (:func:`keyword.iskeyword`: ``if``, ``None``, ``True`` ...) are not, soft keywords
    (``match``, ``_``) are. Names inside string literals (f-string fields included)
    and comments are skipped, and so are the letters of numbers (``1e5``, ``0x1f``).
    The line is read by itself: a line that sits inside a multi-line string is
    scanned as code.
    """
    found = []
    i = 0
    while (m := _LEXEME.search(line, i)) is not None:
        if m.lastgroup == "comment":
            break
        if m.lastgroup == "string":
            quote = m.group().lstrip("rRbBuUfF")
            i = _string_end(line, m.end(), quote)
            continue
        if m.lastgroup == "name" and not keyword.iskeyword(m.group()):
            found.append((m.start(), m.group()))
        i = m.end()
    return found


def identifier_prompts(context: str, target: str) -> list[tuple[str, str]]:
    """(prompt, expected) for each identifier of the `target` line after `context`.

    The prompt is the text up to the identifier with trailing whitespace removed,
    and `expected` is that whitespace followed by the identifier. Byte-level BPE
    writes a space with the word after it (``" name"`` is one token) and a line
    break with the indentation after it, so a prompt that ended in a space or a line
    break would show the model a split it never saw in training.
    """
    prompts = []
    for offset, name in identifiers(target):
        text = context + "\n" + target[:offset]
        prompt = text.rstrip()
        prompts.append((prompt, text[len(prompt) :] + name))
    return prompts


def completes_identifier(
    tokens: Iterable,
    decode: Callable[[list[int]], str],
    expected: str,
    stop_ids: Sequence = (),
) -> bool:
    """Does the continuation read from `tokens` start with `expected` (whitespace
    and an identifier) followed by a character that cannot continue an identifier,
    or by the end of the text (a token of `stop_ids`)? Reading stops as soon as the
    answer is known; a continuation that runs out of tokens before that is wrong."""
    new: list[int] = []
    for token in tokens:
        if token in stop_ids:
            return decode(new) == expected
        new.append(token)
        text = decode(new)
        if not (expected.startswith(text) or text.startswith(expected)):
            return False
        if len(text) > len(expected):
            return not (text[len(expected)].isalnum() or text[len(expected)] == "_")
    return False


def line_tokens(
    context: str, target: str, encode: Callable[[str], list[int]]
) -> tuple[list[int], int]:
    """Token ids of ``context + "\\n" + target`` and the index of the first token of
    the target line (the one that holds its line break), found as the end of the
    longest common prefix with the context's own tokens."""
    own = encode(context)
    ids = encode(context + "\n" + target)
    start = 0
    while start < min(len(own), len(ids)) and own[start] == ids[start]:
        start += 1
    if start == 0 or start == len(ids):
        raise ValueError(
            f"the context and the target line need at least one token each: got "
            f"{len(own)} context tokens and {len(ids) - start} target tokens"
        )
    return ids, start


@torch.no_grad()
def gpt_next_tokens(model: torch.nn.Module, ids: Sequence[int], start: int) -> list:
    """Teacher-forced argmax of a GPT: for each position ``p >= start`` of `ids`, its
    most likely token after ``ids[:p]`` (the gold tokens, not its own guesses).

    One forward pass over the last ``context_length`` tokens before the final one,
    so the first predicted position sees ``context_length - (len(ids) - start)``
    tokens of context, and later ones more.
    """
    n_new, window = len(ids) - start, model.config.context_length
    if not 1 <= start < len(ids):
        raise ValueError(f"start must be in [1, {len(ids) - 1}], got {start}")
    if n_new >= window:
        raise ValueError(
            f"{n_new} target tokens leave no context in a window of {window} tokens"
        )
    x = torch.tensor([list(ids)[-(window + 1) : -1]], device=_device(model))
    logits = model(x)  # (1, seq, vocab)
    return logits[0, -n_new:].argmax(dim=-1).tolist()


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def rule_next_tokens(
    next_token: Callable[[list[int]], int], ids: Sequence[int], start: int
) -> list:
    """Teacher-forced predictions of a next-token rule, position by position."""
    return [next_token(list(ids[:p])) for p in range(start, len(ids))]


@dataclass(frozen=True)
class Completer:
    """What the measures need from a model. `generate` ``(ids, max_new_tokens)``
    yields a greedy continuation; `predict` ``(ids, start)`` gives the teacher-forced
    argmax for each position from `start` on; generation ends at a token of
    `stop_ids`."""

    generate: Callable[[list[int], int], Iterator]
    predict: Callable[[list[int], int], list]
    stop_ids: tuple = ()

    @classmethod
    def gpt(cls, model: torch.nn.Module, eos_id: int | None = None) -> Completer:
        """A GPT, greedy with the KV cache (:func:`gpt_tokens`, :func:`gpt_next_tokens`)."""
        return cls(
            lambda ids, n: gpt_tokens(model, ids, n, eos_id),
            lambda ids, start: gpt_next_tokens(model, ids, start),
            () if eos_id is None else (eos_id,),
        )

    @classmethod
    def rule(cls, next_token: Callable, stop_ids: Sequence = ()) -> Completer:
        """A next-token rule such as :func:`ngram_next_token`'s."""
        return cls(
            lambda ids, n: rule_tokens(next_token, ids, n),
            lambda ids, start: rule_next_tokens(next_token, ids, start),
            tuple(stop_ids),
        )


@dataclass(frozen=True)
class LineScores:
    """One model on one next-line item.

    `line` is the greedy next line; `exact` compares it with the target without
    surrounding whitespace, `edit_similarity` (0 to 100) likewise. `tokens_right`
    of `tokens` counts the target's tokens predicted by teacher-forced argmax, leaving
    out whitespace-only tokens (the line break with its indentation), as CodeXGLUE's
    token-level accuracy leaves out its end-of-line marker. `identifiers_right` of
    `identifiers` counts the target's identifiers completed from the line's own
    prefix (:func:`identifier_prompts`).
    """

    line: str
    exact: bool
    edit_similarity: float
    tokens_right: int
    tokens: int
    identifiers_right: int
    identifiers: int


def score_item(
    item: LineItem,
    completers: dict[str, Completer],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 32,
    identifier_tokens: int = 16,
) -> dict[str, LineScores]:
    """All measures of one next-line item, for each model of `completers`.

    The line is read from a greedy continuation (at most `max_new_tokens` tokens) of
    the context cut by :func:`line_prompt`, with :func:`first_line`; each identifier
    gets at most `identifier_tokens` new tokens.
    """
    target = item.target.strip()
    ids, start = line_tokens(item.context, item.target, encode)
    counted = [p for p in range(start, len(ids)) if decode([ids[p]]).strip()]
    prompts = [(encode(p), e) for p, e in identifier_prompts(item.context, item.target)]
    prompt, skip = line_prompt(item.context)
    prompt_ids = encode(prompt)
    scores = {}
    for name, model in completers.items():
        line = first_line(
            model.generate(prompt_ids, max_new_tokens), decode, model.stop_ids, skip
        ).strip()
        predicted = model.predict(ids, start)
        right = sum(predicted[p - start] == ids[p] for p in counted)
        names_right = sum(
            completes_identifier(
                model.generate(p, identifier_tokens), decode, e, model.stop_ids
            )
            for p, e in prompts
        )
        scores[name] = LineScores(
            line, line == target, edit_similarity(line, target),
            right, len(counted), names_right, len(prompts),
        )  # fmt: skip
    return scores


#: The measures of :func:`paired_measures`, with their unit.
MEASURES = {
    "exact match": "%",
    "edit similarity": "0-100",
    "next-token accuracy": "%",
    "identifier accuracy": "%",
}


def item_measures(scores: LineScores) -> dict[str, float]:
    """The four measures of one item, in the units of :data:`MEASURES`;
    identifier accuracy is NaN for a line without identifiers."""
    return {
        "exact match": 100.0 * scores.exact,
        "edit similarity": scores.edit_similarity,
        "next-token accuracy": 100.0 * scores.tokens_right / scores.tokens,
        "identifier accuracy": (
            100.0 * scores.identifiers_right / scores.identifiers
            if scores.identifiers
            else math.nan
        ),
    }


def paired_measures(
    per_item: Sequence[dict[str, LineScores]],
    a: str,
    b: str,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float, PairedResult]]:
    """For each measure: model `a`'s mean, model `b`'s mean, and the paired
    bootstrap of ``a - b`` (:func:`llmbook.metrics.paired_bootstrap`, resampling
    items).

    Every measure is a mean over items of a per-item score (a macro average), so the
    item is the unit that is resampled, and the identifiers or tokens of one line
    move together. Identifier accuracy is averaged over the items that have at least
    one identifier.
    """
    if not per_item:
        raise ValueError("no items to compare")
    rows = [(item_measures(s[a]), item_measures(s[b])) for s in per_item]
    out = {}
    for measure in MEASURES:
        pairs = [(x[measure], y[measure]) for x, y in rows]
        pairs = [(x, y) for x, y in pairs if not math.isnan(x)]
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        diff = paired_bootstrap(xs, ys, n_resamples=n_resamples, seed=seed)
        out[measure] = (sum(xs) / len(xs), sum(ys) / len(ys), diff)
    return out


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
