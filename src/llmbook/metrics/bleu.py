"""BLEU from scratch, equal to sacrebleu's default (Chapter 8).

BLEU (Papineni et al., 2002) scores a system's output against one or more human
references by counting shared word n-grams, n = 1..4:

* **modified (clipped) precision** p_n: a hypothesis n-gram counts as correct at most
  as many times as it occurs in the reference that has the most of it;
* **brevity penalty** BP = exp(1 - r / c) when the hypothesis length c is below the
  reference length r (1 otherwise), because precision alone rewards short outputs;
* the score is BP * exp(mean_n log p_n), reported on a 0-100 scale.

At the corpus level, counts and lengths are summed over all segments first and the
formula is applied once (it is *not* the mean of sentence scores). The conventions
below are sacrebleu 2.x's defaults, so that ``corpus_bleu(h, r)`` equals
``sacrebleu.corpus_bleu(h, r).score``:

* tokenisation ``13a`` (the WMT ``mteval-v13a`` rules, :func:`tokenize_13a`);
* r for a segment is the length of the reference *closest* to the hypothesis length,
  the shorter one on a tie; r and c are summed over segments;
* ``exp`` smoothing (NIST's): the k-th order that has no match gets precision
  1 / (2^k * total) instead of 0; with no match at any order the score is 0;
* an order with no hypothesis n-grams at all (every segment shorter than n) stops
  the loop: its precision stays 0 and the score is 0 (sacrebleu's
  ``use_effective_order=True``, the sentence-level default, averages over the orders
  that exist instead).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BLEUStats",
    "tokenize_13a",
    "split_punctuation",
    "ngram_counts",
    "bleu_stats",
    "bleu_from_stats",
    "corpus_bleu",
    "sentence_bleu",
    "transpose_references",
]

# --- tokenisation ------------------------------------------------------------------

# ASCII punctuation that 13a always splits off. The apostrophe, comma, hyphen and
# period are missing on purpose: they have their own rules (numbers like 3.14 and
# 1,000 and words like don't and well-known stay whole).
_ALWAYS_SPLIT = "".join(c for c in string.punctuation if c not in "',-.")
_RULES = [
    (re.compile("([" + re.escape(_ALWAYS_SPLIT) + "])"), r" \1 "),
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),  # . or , after a non-digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),  # . or , before a non-digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a hyphen after a digit
]
_ENTITIES = {"&quot;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">"}


def tokenize_13a(text: str) -> list[str]:
    """Split ``text`` into tokens the way mteval-v13a (and sacrebleu's ``13a``) does.

    Trailing whitespace is dropped, ``<skipped>`` markers and hyphenated line breaks
    are removed, four HTML entities are unescaped, punctuation is split off (see
    ``_RULES``), and the result is split on whitespace. Case is kept.
    """
    text = text.rstrip().replace("<skipped>", "").replace("-\n", "")
    text = text.replace("\n", " ")
    for entity, char in _ENTITIES.items():  # order matters: &amp;lt; -> &lt;
        text = text.replace(entity, char)
    return split_punctuation(f" {text} ").split()


def split_punctuation(text: str) -> str:
    """13a's regular expressions alone: spaces around the punctuation it splits off
    (see ``_RULES``). Other tokenisers build on it (Chapter 9's ``tokenize_zh``)."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def ngram_counts(tokens: Sequence[str], max_order: int = 4) -> Counter:
    """Counts of every n-gram of ``tokens``, n = 1..max_order, as tuples."""
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


# --- sufficient statistics ---------------------------------------------------------


@dataclass
class BLEUStats:
    """What BLEU needs from a segment or a corpus: sums are added up over segments.

    matches[n-1] / totals[n-1] is the clipped n-gram precision; hyp_len is c and
    ref_len is r of the brevity penalty (all in tokens).
    """

    hyp_len: int
    ref_len: int
    matches: list[int]
    totals: list[int]

    def __add__(self, other: BLEUStats) -> BLEUStats:
        return BLEUStats(
            self.hyp_len + other.hyp_len,
            self.ref_len + other.ref_len,
            [a + b for a, b in zip(self.matches, other.matches, strict=True)],
            [a + b for a, b in zip(self.totals, other.totals, strict=True)],
        )


def _closest_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length closest to ``hyp_len``; the shorter one on a tie."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def bleu_stats(
    hypothesis: str,
    references: Sequence[str],
    max_order: int = 4,
    tokenize: Callable[[str], list[str]] | None = None,
) -> BLEUStats:
    """Clipped n-gram matches, n-gram totals and lengths of one segment.

    An n-gram's count in the hypothesis is clipped to its largest count in any one
    reference. ``tokenize`` splits a text into tokens (default :func:`tokenize_13a`;
    sacrebleu's ``tokenize=`` option; Chapter 9 passes its Chinese tokeniser).
    Raises ``ValueError`` for a segment without references.
    """
    if len(references) == 0:
        raise ValueError("each hypothesis needs at least one reference, got none")
    tokenize = tokenize or tokenize_13a
    hyp = tokenize(hypothesis)
    refs = [tokenize(r) for r in references]
    max_ref: Counter = Counter()
    for ref in refs:
        max_ref |= ngram_counts(ref, max_order)  # | keeps the larger count
    matches, totals = [0] * max_order, [0] * max_order
    for gram, count in ngram_counts(hyp, max_order).items():
        totals[len(gram) - 1] += count
        matches[len(gram) - 1] += min(count, max_ref[gram])
    ref_len = _closest_length(len(hyp), [len(r) for r in refs])
    return BLEUStats(len(hyp), ref_len, matches, totals)


def bleu_from_stats(stats: BLEUStats, effective_order: bool = False) -> float:
    """BLEU (0-100) from summed statistics, with ``exp`` smoothing.

    With ``effective_order=True`` the geometric mean runs over the orders that have
    at least one hypothesis n-gram (for short sentences), as sacrebleu's
    sentence-level default does.
    """
    c, r = stats.hyp_len, stats.ref_len
    if c < r:
        brevity = math.exp(1 - r / c) if c > 0 else 0.0
    else:
        brevity = 1.0
    if not any(stats.matches):
        return 0.0
    log_precisions, halvings = [], 0
    for matched, total in zip(stats.matches, stats.totals, strict=True):
        if total == 0:  # no n-grams of this order (every segment too short)
            break
        if matched == 0:
            halvings += 1
            precision = 1.0 / (2**halvings * total)  # NIST "exp" smoothing
        else:
            precision = matched / total
        log_precisions.append(math.log(100.0 * precision))
    order = len(log_precisions) if effective_order else len(stats.matches)
    if len(log_precisions) < order:
        return 0.0  # a missing order has precision 0: log 0 = -inf
    return brevity * math.exp(sum(log_precisions) / order)


# --- public scores -----------------------------------------------------------------


def transpose_references(references: Sequence[Sequence[str]], n: int) -> list[list]:
    """sacrebleu's layout ``references[j][i]`` -> per hypothesis ``refs[i] = [...]``.

    ``None`` entries (a hypothesis with fewer references) are dropped. Raises
    ``ValueError`` when a reference stream does not have ``n`` entries.
    """
    for j, stream in enumerate(references):
        if isinstance(stream, str):
            raise ValueError(
                "references must be a list of reference streams (a list of lists of "
                f"strings, references[j][i]); references[{j}] is a string"
            )
        if len(stream) != n:
            raise ValueError(
                f"reference stream {j} has {len(stream)} segments but there are {n} "
                "hypotheses"
            )
    return [[s[i] for s in references if s[i] is not None] for i in range(n)]


def corpus_bleu(
    hypotheses: list[str],
    references: list[list[str]],
    tokenize: Callable[[str], list[str]] | None = None,
) -> float:
    """Corpus BLEU on a 0-100 scale, equal to ``sacrebleu.corpus_bleu(...).score``
    (``tokenize``: as in :func:`bleu_stats`, default 13a).

    Args:
        hypotheses: one system output per segment (detokenised text).
        references: reference *streams* in sacrebleu's layout: ``references[j][i]`` is
            the j-th reference of hypothesis i (every stream has one entry per
            hypothesis; ``None`` where a segment has fewer references).

    Raises:
        ValueError: no hypotheses, no reference stream, or a stream of the wrong
            length.
    """
    if len(hypotheses) == 0:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    if len(references) == 0:
        raise ValueError("corpus_bleu needs at least one reference stream")
    per_segment = transpose_references(references, len(hypotheses))
    total = BLEUStats(0, 0, [0] * 4, [0] * 4)
    for hyp, refs in zip(hypotheses, per_segment, strict=True):
        total = total + bleu_stats(hyp, refs, tokenize=tokenize)
    return bleu_from_stats(total)


def sentence_bleu(hypothesis: str, references: list[str]) -> float:
    """BLEU of one segment (0-100) against its references, as
    ``sacrebleu.sentence_bleu(hypothesis, references).score`` (``exp`` smoothing and
    the effective order). BLEU is designed for corpora: per sentence it is noisy."""
    if isinstance(references, str):
        raise ValueError("references must be a list of strings, got one string")
    return bleu_from_stats(bleu_stats(hypothesis, references), effective_order=True)
