"""A small benchmark harness in the style of EleutherAI's lm-evaluation-harness
(Chapter 8).

A *multiple-choice task* is a list of items: a context, k candidate continuations
and the index of the right one. A language model answers without generating
anything: it scores each continuation by its log-likelihood given the context and
picks the highest. Two rules, as in lm-evaluation-harness:

* ``acc``: the summed log-likelihood log p(continuation | context). Longer
  continuations pay for more tokens, so this favours short choices;
* ``acc_norm``: the log-likelihood divided by the continuation's length in UTF-8
  bytes, a unit every model shares (lm-evaluation-harness divides by characters).

Anything with a method ``loglikelihood(contexts, continuations) -> np.ndarray``
is a model here: :class:`CausalLMScorer` wraps a PyTorch causal LM and its
tokenizer (batched, automatic device, bf16 autocast on CUDA), :class:`NGramScorer`
an :class:`llmbook.data.ngram.NGramLM`. Chance is ``1 / len(choices)`` per item, computed
exactly rather than sampled.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from llmbook.metrics.language_modeling import score_sequences

__all__ = [
    "MCItem",
    "Scorer",
    "CausalLMScorer",
    "NGramScorer",
    "evaluate_multiple_choice",
    "next_line_task",
    "docstring_task",
]


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: ``choices[answer]`` is the real continuation of
    ``context``; ``source`` names the document it came from."""

    context: str
    choices: tuple[str, ...]
    answer: int
    source: int = -1


class Scorer(Protocol):
    def loglikelihood(
        self, contexts: Sequence[str], continuations: Sequence[str]
    ) -> np.ndarray:
        """log p(continuation | context) in nats, shape (n,)."""
        ...


def _encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """token ids of a text, for a ``tokenizers.Tokenizer`` or a transformers one."""
    if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        return lambda text: tokenizer.encode(text).ids
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


class CausalLMScorer:
    """A causal LM (``model(ids) -> logits``, e.g. the course GPT) as a scorer.

    The context is encoded after an end-of-text token (a document start, as in
    training) and the continuation separately, so that its tokens are its own.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        context_length: int,
        eos_id: int,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        self.model, self.encode = model, _encoder(tokenizer)
        self.context_length, self.eos_id = context_length, eos_id
        self.batch_size, self.device = batch_size, device

    def loglikelihood(self, contexts, continuations) -> np.ndarray:
        sequences, starts = [], []
        for context, continuation in zip(contexts, continuations, strict=True):
            prefix = [self.eos_id] + self.encode(context)
            sequences.append(prefix + self.encode(continuation))
            starts.append(len(prefix))
        logprob, _ = score_sequences(
            self.model, sequences, starts, self.context_length, self.batch_size,
            self.device,
        )  # fmt: skip
        return logprob


class NGramScorer:
    """An :class:`~llmbook.data.ngram.NGramLM` as a scorer; ``encode`` maps text to
    the tokens the model was fitted on (BPE ids, bytes, words)."""

    def __init__(self, lm: Any, encode: Callable[[str], Sequence]) -> None:
        self.lm, self.encode = lm, encode

    def loglikelihood(self, contexts, continuations) -> np.ndarray:
        out = []
        for context, continuation in zip(contexts, continuations, strict=True):
            history = ["<s>"] * (self.lm.order - 1) + list(self.encode(context))
            total = 0.0
            for token in self.encode(continuation):
                total += self.lm.logprob(token, history[-(self.lm.order - 1) :])
                history.append(token)
            out.append(total)
        return np.array(out)


def evaluate_multiple_choice(
    scorer: Scorer, items: Sequence[MCItem]
) -> dict[str, np.ndarray]:
    """Score every choice of every item once; return per-item correctness (0/1
    arrays of shape (n_items,)) under ``"acc"`` (summed log-likelihood) and
    ``"acc_norm"`` (per byte of the choice)."""
    if not items:
        raise ValueError("evaluate_multiple_choice needs at least one item")
    contexts = [item.context for item in items for _ in item.choices]
    choices = [choice for item in items for choice in item.choices]
    scores = scorer.loglikelihood(contexts, choices)
    lengths = np.array([max(1, len(c.encode("utf-8"))) for c in choices])
    acc, acc_norm, k = [], [], 0
    for item in items:
        s = scores[k : k + len(item.choices)]
        n = lengths[k : k + len(item.choices)]
        acc.append(int(np.argmax(s)) == item.answer)
        acc_norm.append(int(np.argmax(s / n)) == item.answer)
        k += len(item.choices)
    return {"acc": np.array(acc, float), "acc_norm": np.array(acc_norm, float)}


# --- tasks built from the course corpus --------------------------------------------


def _shuffled(correct: str, distractors: list[str], rng: random.Random):
    choices = [correct, *distractors]
    rng.shuffle(choices)
    return tuple(choices), choices.index(correct)


def next_line_task(
    docs: Sequence[str], n_items: int = 200, n_choices: int = 4, seed: int = 0,
    max_context_chars: int = 300,
) -> list[MCItem]:  # fmt: skip
    """ "Which line really comes next?": the context is the start of a document, up
    to a line break, and the distractors are lines of *other* documents of the same
    split (so a split by document keeps the task honest)."""
    rng = random.Random(seed)
    lines = [
        (d, line) for d, doc in enumerate(docs) for line in doc.split("\n") if len(line) > 20
    ]  # fmt: skip
    candidates = [d for d, doc in enumerate(docs) if doc.count("\n") >= 1]
    items = []
    for d in rng.sample(candidates, min(n_items, len(candidates))):
        parts = docs[d].split("\n")
        cuts = [i for i in range(1, len(parts)) if len(parts[i]) > 20]
        if not cuts:
            continue
        i = rng.choice(cuts)
        context = "\n".join(parts[:i])[-max_context_chars:]
        distractors = []
        while len(distractors) < n_choices - 1:
            other, line = rng.choice(lines)
            if other != d and "\n" + line not in distractors:
                distractors.append("\n" + line)
        choices, answer = _shuffled("\n" + parts[i], distractors, rng)
        items.append(MCItem(context, choices, answer, d))
    return items


def _functions(source: str) -> list[tuple[str, str]]:
    """(``def name(args):`` line, first docstring line) for each documented
    function of a module's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and ast.get_docstring(node):
            first = ast.get_docstring(node).strip().split("\n")[0].strip()
            header = f"def {node.name}({ast.unparse(node.args)}):"
            if len(first) > 10 and len(header) < 150:
                found.append((header, first))
    return found


def docstring_task(
    docs: Sequence[str], n_items: int = 200, n_choices: int = 4, seed: int = 0
) -> list[MCItem]:
    """ "Which docstring belongs to this function?": the context is a ``def`` line
    from a module's source and the opening quotes; the choices are first docstring
    lines of functions of the same split."""
    rng = random.Random(seed)
    pairs = [(d, h, f) for d, doc in enumerate(docs) for h, f in _functions(doc)]
    items = []
    for d, header, first in rng.sample(pairs, min(n_items, len(pairs))):
        pool = sorted({f for _, _, f in pairs if f != first})  # sorted: reproducible
        distractors = rng.sample(pool, n_choices - 1)
        choices, answer = _shuffled(first, distractors, rng)
        items.append(MCItem(f'{header}\n    """', choices, answer, d))
    return items
