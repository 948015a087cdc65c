"""Code completion with the course GPT and with an n-gram model (Chapter 12): the items
and the decoding.

Given a module's source up to a line inside a function, what does the model write
next? :func:`next_line_items` makes the items from held-out modules,
:func:`line_prompt` cuts each prompt where the training data could have split it,
:func:`gpt_line` and :func:`greedy_line` decode a line with a GPT or with any
next-token rule, and :func:`ngram_next_token` is the exact greedy rule of an
:class:`llmbook.data.NGramLM`. The measures of code-completion benchmarks are in
:mod:`llmbook.apps.codemeasures`; running model-written bodies against doctests, and
checking generated exercises, in :mod:`llmbook.apps.codechecks`.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "LineItem",
    "next_line_items",
    "first_line",
    "line_prompt",
    "rule_tokens",
    "greedy_line",
    "gpt_tokens",
    "gpt_line",
    "ngram_next_token",
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
        yield int(t[0])  # stream itself stops after a lone sequence's eos_id


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
