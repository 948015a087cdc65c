"""Measures of code completion (Chapter 12), as code-completion benchmarks take them.

:func:`score_item` scores an item of :mod:`llmbook.apps.codecomplete` with the
measures of CodeXGLUE's line- and token-level completion: exact match and
:func:`edit_similarity` of the greedy line, teacher-forced next-token accuracy
(:func:`gpt_next_tokens`, :func:`rule_next_tokens`), and identifier completion
(:func:`identifier_prompts`, :func:`completes_identifier`); a :class:`Completer` is
what it needs from a model. :func:`paired_measures` compares two models with paired
bootstrap intervals.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from llmbook.apps.codecomplete import (
    LineItem,
    first_line,
    gpt_tokens,
    line_prompt,
    rule_tokens,
)
from llmbook.metrics.statistics import PairedResult, paired_bootstrap

__all__ = [
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
    "item_measures",
    "paired_measures",
    "MEASURES",
]


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
