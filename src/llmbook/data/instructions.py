"""Chapter 7's instruction pairs: a question about a Python definition and the first
sentence of its docstring as the answer, split as the course's documents are.

``course-gpt-sft`` (Chapter 7) is tuned on the training pairs and the reader
``course-gpt-rag`` (Chapter 12) on them with passages; both are scored on the held-out
pairs, whose docstrings are validation documents and whose names never occur among
the training pairs.
"""

from __future__ import annotations

import ast
import re

from llmbook.data.cleaning import clean_text
from llmbook.data.corpus import load_corpus
from llmbook.data.splits import course_splits

__all__ = ["first_sentence", "instruction_pairs"]


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, whitespace normalised."""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph)[0]


def instruction_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Chapter 7's instruction pairs (name, first sentence of its docstring).

    Built exactly as Chapter 7 §1.3 built them for ``course-gpt-sft``: every public
    function or class with a docstring in the ``"source"`` corpus; a pair is for
    training when its cleaned docstring is a training document of the course split,
    held out when it is a validation document and its name never occurs in training.
    Returns ``(train_pairs, held_out_pairs)``.
    """
    splits = course_splits()
    definitions = [
        (node.name, ast.get_docstring(node))
        for src in load_corpus("source", min_chars=0)
        for node in ast.walk(ast.parse(src))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
        and not node.name.startswith("_")
        and ast.get_docstring(node)
    ]
    train_docs, val_docs = set(splits.train), set(splits.val)
    train = [
        (n, first_sentence(d)) for n, d in definitions if clean_text(d) in train_docs
    ]
    seen = {n for n, _ in train}
    held = [
        (n, first_sentence(d))
        for n, d in definitions
        if clean_text(d) in val_docs and n not in seen
    ]
    return train, held
