"""A pattern-based input/output filter, and the tricks that evade it (Chapter 13).

:class:`PatternFilter` flags text that matches any of its named regular expressions,
optionally after :func:`normalize` (Unicode NFKC, case folding, removal of invisible
format characters, collapsed whitespace), and can redact the matches (an output
filter). The ``evade_*`` functions rewrite a string the way people get around such
filters; Chapter 13 measures which of them the normalisation undoes.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Mapping

__all__ = [
    "UNSAFE_CODE_PATTERNS",
    "SECRET_PATTERNS",
    "PatternFilter",
    "normalize",
    "EVASIONS",
]

#: Calls that run shell commands, evaluate strings as code, unpickle data or delete
#: trees: things a code assistant's output filter might hold back.
UNSAFE_CODE_PATTERNS: dict[str, str] = {
    "os.system": r"\bos\s*\.\s*system\s*\(",
    "shell=True": r"\bshell\s*=\s*true\b",
    "eval/exec": r"(?<![\w.])(?:eval|exec)\s*\(",
    "pickle.loads": r"\bpickle\s*\.\s*loads?\s*\(",
    "rmtree": r"\bshutil\s*\.\s*rmtree\s*\(",
    "rm -rf": r"\brm\s+-[a-z]*r[a-z]*f|\brm\s+-[a-z]*f[a-z]*r",
}

#: A secret written out after a word that announces it ("code is 482").
SECRET_PATTERNS: dict[str, str] = {
    "announced secret": r"\b(?:secret|password|passcode|pin|code)\b\W+(?:\w+\W+){0,4}?"
    r"\d(?:\W?\d){2,}",
    "email": r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b",
}


def normalize(text: str) -> str:
    """NFKC (full-width and compatibility forms to plain ones), case folding,
    invisible format characters (zero-width spaces, joiners; category Cf) removed,
    runs of whitespace collapsed to one space."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return re.sub(r"\s+", " ", text)


class PatternFilter:
    """Flag (and redact) text matching any of ``patterns`` (name -> regex).

    ``normalize_first`` matches against :func:`normalize`'d text; matching is case
    insensitive either way. ``redact`` works on the text as given (without
    normalisation), so it only removes what it can locate in the original.
    """

    def __init__(
        self, patterns: Mapping[str, str], normalize_first: bool = True
    ) -> None:
        if not isinstance(patterns, Mapping) or not patterns:
            raise ValueError("patterns must be a non-empty mapping of name -> regex")
        self.normalize_first = normalize_first
        self.rules: dict[str, re.Pattern[str]] = {}
        for name, pattern in patterns.items():
            try:
                self.rules[name] = re.compile(pattern, re.IGNORECASE)
            except re.error as err:
                raise ValueError(
                    f"pattern {name!r} is not a valid regex: {err}"
                ) from err

    def check(self, text: str) -> list[str]:
        """The names of the rules ``text`` matches (empty: it passes)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        seen = normalize(text) if self.normalize_first else text
        return [name for name, rule in self.rules.items() if rule.search(seen)]

    def blocks(self, text: str) -> bool:
        return bool(self.check(text))

    def redact(self, text: str, mask: str = "[REDACTED]") -> str:
        """``text`` with every match of every rule replaced by ``mask``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        for rule in self.rules.values():
            text = rule.sub(mask, text)
        return text


_HOMOGLYPHS = str.maketrans("aceopxyi", "асеорхуі")  # Latin -> Cyrillic look-alikes


def _evade_spaces(text: str) -> str:
    return " ".join(text)


def _evade_zero_width(text: str) -> str:
    return "\u200b".join(text)


def _evade_fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _evade_homoglyphs(text: str) -> str:
    return text.translate(_HOMOGLYPHS)


def _evade_upper(text: str) -> str:
    return text.upper()


def _evade_base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: Rewrites that keep the meaning for a human (or a decoder) but change the bytes.
EVASIONS = {
    "upper case": _evade_upper,
    "full-width": _evade_fullwidth,
    "zero-width": _evade_zero_width,
    "spaced out": _evade_spaces,
    "homoglyphs": _evade_homoglyphs,
    "base64": _evade_base64,
}
