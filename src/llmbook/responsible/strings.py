"""Where the string literals of a Python source are (Chapter 13's linear probe).

The labels of the probe "is this token inside a string literal?" must depend on the
source text only, not on the interpreter that runs the chapter. Python's ``tokenize``
changed in 3.12 (PEP 701): an f-string is no longer one ``STRING`` token but a
``FSTRING_START`` ... ``FSTRING_END`` run, with the replacement fields' own tokens
inside (and 3.14 adds t-strings, ``TSTRING_START`` ... ``TSTRING_END``). Labelling with
``STRING`` tokens alone changed the probe's accuracies on Colab's Python.
:func:`string_spans` merges each such run back into one literal, which is what the
3.11 tokenizer returned, so the spans are the same on Python 3.10 to 3.14.

Standard library only (no torch, no llmbook import): tests/unit/data/test_portability.py runs
this file under other interpreters.
"""

from __future__ import annotations

import io
import tokenize

__all__ = ["string_spans", "window_outside_strings"]

_OPEN = {n for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)}
_CLOSE = {n for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)}


def string_spans(src: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of every string literal of `src`, in order,
    an f-string counted as one literal whatever the interpreter's tokenizer.

    Raises:
        ValueError: `src` is not Python that this interpreter can tokenize.
    """
    starts = [0]
    for line in src.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(row_col: tuple[int, int]) -> int:
        return starts[row_col[0] - 1] + row_col[1]

    spans, depth, opened = [], 0, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            kind = tokenize.tok_name[tok.type]
            if kind in _OPEN:
                if depth == 0:
                    opened = offset(tok.start)
                depth += 1
            elif kind in _CLOSE:
                depth -= 1
                if depth == 0:
                    spans.append((opened, offset(tok.end)))
            elif kind == "STRING" and depth == 0:
                spans.append((offset(tok.start), offset(tok.end)))
    except (tokenize.TokenError, SyntaxError) as err:
        raise ValueError(f"cannot tokenize the source: {err}") from err
    return spans


def window_outside_strings(spans: list[tuple[int, int]], at: int, src: str) -> int:
    """The first line start at or after character `at` of `src` that lies outside
    every span, so that a window starting there never begins inside a literal whose
    opening quote it cannot see. Raises ValueError when there is none."""
    position = at if at == 0 or src[at - 1] == "\n" else src.find("\n", at) + 1
    while 0 < position < len(src):
        if not any(a < position < b for a, b in spans):
            return position
        position = src.find("\n", position) + 1
    raise ValueError(f"no line start outside a string literal after character {at}")
