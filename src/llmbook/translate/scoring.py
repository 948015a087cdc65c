"""Scoring translations (Chapter 9): BLEU with sacrebleu's ``zh`` tokeniser, the
copy and dictionary baselines, the sentence-level test set, per-catalog scores and
the paired bootstrap of Chapter 8."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from llmbook.data.parallel import CATALOGS, Pair, load_parallel, n_words
from llmbook.metrics.bleu import (
    BLEUStats,
    bleu_from_stats,
    bleu_stats,
    split_punctuation,
)
from llmbook.metrics.overlap import chrf_from_stats, chrf_stats, corpus_chrf
from llmbook.metrics.statistics import bootstrap_ci

# sacrebleu's zh tokeniser puts spaces around each character in these code-point
# ranges. Its table writes two ranges with five hex digits in a \u escape
# ("\u20000", "\u2f800"), which Python reads as one character plus a digit; the
# effective ranges are therefore U+2001-U+2A6D and U+2F81-U+2FA1, kept here so the
# scores stay equal to sacrebleu's (tests/unit/translate/test_translation.py checks every code point).
_ZH_RANGES = (
    (0x3400, 0x4DB5), (0x4E00, 0x9FA5), (0x9FA6, 0x9FBB), (0xF900, 0xFA2D),
    (0xFA30, 0xFA6A), (0xFA70, 0xFAD9), (0x2001, 0x2A6D), (0x2F81, 0x2FA1),
    (0xFF00, 0xFFEF), (0x2E80, 0x2EFF), (0x3000, 0x303F), (0x31C0, 0x31EF),
    (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF), (0x3100, 0x312F), (0x31A0, 0x31BF),
    (0xFE10, 0xFE1F), (0xFE30, 0xFE4F), (0x2600, 0x26FF), (0x2700, 0x27BF),
    (0x3200, 0x32FF), (0x3300, 0x33FF),
)  # fmt: skip


def _is_zh(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _ZH_RANGES)


def tokenize_zh(text: str) -> list[str]:
    """sacrebleu's ``zh`` tokenisation: every Chinese character (and CJK punctuation,
    full-width form) is a token; the rest is split by the regular expressions of
    ``13a`` (without its HTML-entity step)."""
    text = "".join(f" {c} " if _is_zh(c) else c for c in text.strip())
    return split_punctuation(text).split()


def corpus_bleu_zh(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> float:
    """Corpus BLEU with the ``zh`` tokeniser, equal to
    ``sacrebleu.corpus_bleu(hyps, refs, tokenize="zh").score``.

    ``references[i]`` is the list of references of hypothesis i (any number >= 1;
    note: per hypothesis, not sacrebleu's per-stream layout).
    """
    if len(hypotheses) == 0 or len(hypotheses) != len(references):
        raise ValueError(
            f"need one reference list per hypothesis: {len(hypotheses)} hypotheses, "
            f"{len(references)} reference lists"
        )
    total = BLEUStats(0, 0, [0] * 4, [0] * 4)
    for hyp, refs in zip(hypotheses, references, strict=True):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references of {hyp!r} must be a non-empty list of str")
        total = total + bleu_stats(hyp, refs, tokenize=tokenize_zh)
    return bleu_from_stats(total)


# --- baselines ---------------------------------------------------------------------


def copy_baseline(texts: Sequence[str]) -> list[str]:
    """Output the English source unchanged (what an untranslated string scores)."""
    return list(texts)


#: The word-level origins that make the dictionary of the verdict's baseline.
DICTIONARY_ORIGINS = ("cedict", "cldr")


class DictionaryBaseline:
    """Word-by-word lookup in a list of pairs (the verdict's baseline: the training
    pairs of CC-CEDICT and CLDR, :data:`DICTIONARY_ORIGINS`).

    The whole source if it is an entry; otherwise each word (also tried as
    ``to <word>``) replaced by its most frequent translation, unknown words copied.
    No model, no reordering: what an afternoon with a dictionary gives. Given all the
    training pairs it becomes a stronger *translation-memory* lookup (catalog labels
    such as "File" are entries too), which the chapter reports beside it.
    """

    def __init__(self, train_pairs: Sequence[Pair]) -> None:
        counts: dict[str, Counter] = {}
        for p in train_pairs:
            counts.setdefault(p.en.casefold(), Counter())[p.zh] += 1
        self.table = {en: c.most_common(1)[0][0] for en, c in counts.items()}

    def translate_one(self, text: str) -> str:
        key = text.casefold()
        if key in self.table:
            return self.table[key]
        words = [w.strip(".,:;!?()\"'") for w in key.split()]
        out = [self.table.get(w) or self.table.get(f"to {w}") or w for w in words if w]
        return "".join(out)

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return [self.translate_one(t) for t in texts]


# --- the test set ------------------------------------------------------------------


def verdict_pairs(
    split: str = "test", origins: Sequence[str] = CATALOGS, min_words: int = 3
) -> list[Pair]:
    """The verdict's test set: the ``split`` pairs of the catalogs (interface
    messages; never CLDR names or CC-CEDICT glosses) whose English has at least
    ``min_words`` words (sentence-level), one pair per English source."""
    return [p for p in load_parallel(split, origins) if n_words(p.en) >= min_words]


def sample_sources(pairs: Sequence[Pair], max_sources: int | None = 200) -> list[Pair]:
    """Every k-th pair (in snapshot order), at most ``max_sources``: a sample chosen
    by a rule, so each origin keeps its share and nobody picks the examples."""
    pairs = list(pairs)
    if max_sources is None or len(pairs) <= max_sources:
        return pairs
    step = len(pairs) / max_sources
    return [pairs[int(i * step)] for i in range(max_sources)]


# --- scores ------------------------------------------------------------------------


def score_outputs(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Corpus chrF and BLEU (zh) of ``hyps`` against one reference each."""
    return {"chrF": corpus_chrf(list(hyps), [list(refs)]),
            "BLEU": corpus_bleu_zh(hyps, [[r] for r in refs])}  # fmt: skip


def chrf_difference_ci(hyps_a, hyps_b, refs, n_resamples: int = 1000, seed: int = 0):
    """Corpus chrF of A minus B with a paired bootstrap interval (Koehn, 2004): the
    test sentences are resampled, the same ones for both systems, and the corpus
    chrF of each recomputed (Chapter 8's :func:`bootstrap_ci` with a statistic).
    Returns ``(difference, low, high)`` at 95%."""
    rows = np.array([chrf_stats(a, [r]) + chrf_stats(b, [r])
                     for a, b, r in zip(hyps_a, hyps_b, refs, strict=True)])  # fmt: skip

    def statistic(sample: np.ndarray) -> float:
        totals = sample.sum(axis=0)
        return chrf_from_stats(list(totals[:18])) - chrf_from_stats(list(totals[18:]))

    return bootstrap_ci(rows, statistic, n_resamples=n_resamples, seed=seed)


def per_catalog(outputs: dict[str, Sequence[str]], pairs: Sequence[Pair]):
    """chrF of each system on each catalog's share of ``pairs``:
    ``{origin: {"sources": n, system: chrF, ...}}``."""
    table = {}
    for origin in dict.fromkeys(p.origin for p in pairs):
        idx = [i for i, p in enumerate(pairs) if p.origin == origin]
        refs = [[pairs[i].zh for i in idx]]
        row = {"sources": len(idx)}
        for name, hyps in outputs.items():
            row[name] = round(corpus_chrf([hyps[i] for i in idx], refs), 2)
        table[origin] = row
    return table


def evaluate_mt(model, src_tok, vocab, pairs: Sequence[Pair] | None = None,
                decode: str = "greedy", num_beams: int = 4) -> dict:  # fmt: skip
    """Model, copy, dictionary and translation-memory ("memory": lookup in all the
    training pairs) outputs and scores on ``pairs`` (default: the whole
    sentence-level test set), per catalog, and the paired bootstrap interval of
    model minus dictionary chrF."""
    from llmbook.translate.model import beam_translate, greedy_translate

    pairs = list(verdict_pairs() if pairs is None else pairs)
    sources, refs = [p.en for p in pairs], [p.zh for p in pairs]
    if decode == "greedy":
        model_out = greedy_translate(model, sources, src_tok, vocab)
    elif decode == "beam":
        model_out = beam_translate(model, sources, src_tok, vocab, num_beams)
    else:
        raise ValueError(f"decode must be 'greedy' or 'beam', got {decode!r}")
    train = load_parallel("train")
    dictionary = DictionaryBaseline(
        [p for p in train if p.origin in DICTIONARY_ORIGINS]
    )
    outputs = {"model": model_out, "copy": copy_baseline(sources),
               "dictionary": dictionary(sources),
               "memory": DictionaryBaseline(train)(sources)}  # fmt: skip
    scores = {name: score_outputs(out, refs) for name, out in outputs.items()}
    diff = chrf_difference_ci(outputs["model"], outputs["dictionary"], refs)
    return {"n": len(pairs), "decode": decode, "outputs": outputs, "scores": scores,
            "per_catalog": per_catalog(outputs, pairs),
            "model_minus_dictionary": diff}  # fmt: skip


def verdict_line(result: dict, name: str = "course-mt") -> str:
    """``course-mt chrF C, BLEU B; copy chrF X; dictionary chrF Y; N test sources``."""
    s = result["scores"]
    return (f"{name} chrF {s['model']['chrF']:.2f}, BLEU {s['model']['BLEU']:.2f}; "
            f"copy chrF {s['copy']['chrF']:.2f}; "
            f"dictionary chrF {s['dictionary']['chrF']:.2f}; "
            f"{result['n']} test sources")  # fmt: skip
