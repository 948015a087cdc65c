"""A fast, count-based n-gram language model (Chapter 1).

Chapter 1 builds an n-gram language model inline and compares it with
:mod:`nltk.lm`. ``nltk.lm`` is the reference but it is slow: its Kneser-Ney smoothing
recounts continuation types by scanning every stored n-gram on each query. This module
counts once, with plain dictionaries, and then scores a token in a few dictionary
look-ups. ``tests/unit/data/test_ngram.py`` checks that every probability equals nltk's.

Conventions (the same as ``nltk.lm`` fed with the same n-grams):

* A document is a sequence of hashable tokens (token ids or strings). For an order-``n``
  model it is padded with ``n - 1`` start symbols ``"<s>"`` on the left and ONE end
  symbol ``"</s>"`` on the right, so the model predicts every real token and the end of
  the document, and nothing else. (``nltk.lm.preprocessing.pad_both_ends`` pads
  ``n - 1`` end symbols, which makes the model "predict" ``</s>`` after ``</s>`` and
  flatters high orders; we pad one.)
* Training counts every m-gram of each padded document, m = 1..n ("everygrams").
* The vocabulary is every token seen in the padded training documents plus ``"<UNK>"``;
  tokens outside it are scored as ``"<UNK>"``. ``vocab_size`` counts all of them.
* Perplexity is ``exp`` of the mean negative log-probability (natural log) per
  predicted token, i.e. per real token plus one end symbol per document.

Smoothing (``smoothing=``):

``"mle"``
    Relative frequency ``c(h, w) / c(h)``; 0 for an unseen context.
``"add_k"`` (``"laplace"`` is add-1)
    ``(c(h, w) + k) / (c(h) + k V)`` with ``V = vocab_size``.
``"kneser_ney"``
    Interpolated Kneser-Ney with one absolute ``discount`` d, exactly as
    ``nltk.lm.KneserNeyInterpolated``: at the highest order
    ``p(w | h) = max(c(h, w) - d, 0) / c(h) + d T(h) / c(h) * p(w | h')``, where
    ``T(h)`` is the number of distinct words seen after ``h`` and ``h'`` drops the
    oldest token of ``h``; lower orders replace counts by continuation counts
    (the number of distinct left neighbours), and the unigram level is the
    continuation distribution ``N1+(. w) / N1+(. .)``, with no uniform floor by
    default: a token never seen after another token gets probability 0 (perplexity
    ``inf``), as in nltk. With ``uniform=V`` the unigram level is discounted too and
    interpolated with the uniform distribution over the V tokens the model predicts
    (Chen and Goodman's recursion ends there): ``max(N1+(. w) - d, 0) / N1+(. .) +
    d T / N1+(. .) / V``, with T the number of distinct continuation words, so an
    unseen token keeps a small probability and perplexity stays finite. An unseen
    context passes all its mass to the lower order. Needs order >= 2.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence

__all__ = ["BOS", "EOS", "UNK", "SMOOTHINGS", "NGramLM", "pad"]

BOS, EOS, UNK = "<s>", "</s>", "<UNK>"
SMOOTHINGS = ("mle", "add_k", "laplace", "kneser_ney")

Token = Hashable


def pad(tokens: Sequence[Token], order: int) -> list[Token]:
    """``order - 1`` start symbols, the tokens, one end symbol."""
    return [BOS] * (order - 1) + list(tokens) + [EOS]


def _as_docs(tokens_or_docs: Iterable) -> list[list[Token]]:
    """Accept one document (a sequence of tokens) or a list of documents."""
    items = list(tokens_or_docs)
    if items and isinstance(items[0], (list, tuple)):
        return [list(doc) for doc in items]
    return [items]


class NGramLM:
    """Count-based n-gram language model over any hashable tokens.

    Args:
        order: n, the length of the n-grams (1 = unigram model).
        smoothing: one of :data:`SMOOTHINGS` (see the module docstring).
        k: the pseudo-count of ``"add_k"`` (``"laplace"`` forces 1).
        discount: the absolute discount d of ``"kneser_ney"``, in [0, 1].
        uniform: ``"kneser_ney"`` only: the number V of tokens the model predicts
            over (a tokenizer's vocabulary size); the unigram level is then mixed
            with the uniform distribution 1/V, so no token has probability 0.

    Example::

        lm = NGramLM(3, "kneser_ney", discount=0.75).fit(train_docs)
        lm.perplexity(val_docs)
    """

    def __init__(
        self,
        order: int,
        smoothing: str = "kneser_ney",
        *,
        k: float = 1.0,
        discount: float = 0.75,
        uniform: int | None = None,
    ) -> None:
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(
                f"unknown smoothing {smoothing!r}: choose one of {', '.join(SMOOTHINGS)}"
            )
        if smoothing == "kneser_ney" and order < 2:
            raise ValueError(
                "kneser_ney needs order >= 2 (its unigram level is built from bigram "
                "continuation counts); use add_k for a unigram model"
            )
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        if not 0 <= discount <= 1:
            raise ValueError(f"discount must be in [0, 1], got {discount}")
        if uniform is not None and (not isinstance(uniform, int) or uniform < 1):
            raise ValueError(f"uniform must be None or an int >= 1, got {uniform!r}")
        if uniform is not None and smoothing != "kneser_ney":
            raise ValueError("uniform applies to kneser_ney smoothing only")
        self.order = order
        self.smoothing = smoothing
        self.k = 1.0 if smoothing == "laplace" else float(k)
        self.discount = float(discount)
        self.uniform = uniform
        self.vocab: set[Token] = set()
        self._fitted = False

    # --- training -----------------------------------------------------------------

    def fit(self, docs: Iterable[Sequence[Token]]) -> NGramLM:
        """Count every 1..n-gram of the padded documents. Returns self."""
        n = self.order
        # counts[ctx][w] for contexts of every length 0..n-1
        counts: dict[tuple, dict[Token, int]] = defaultdict(lambda: defaultdict(int))
        vocab: set[Token] = {UNK}
        for doc in docs:
            padded = pad(doc, n)
            vocab.update(padded)
            for i, word in enumerate(padded):
                for m in range(min(n, i + 1)):  # context length m
                    counts[tuple(padded[i - m : i])][word] += 1
        if len(vocab) == 1:
            raise ValueError("fit needs at least one document")
        self.vocab = vocab
        self._counts = {ctx: dict(f) for ctx, f in counts.items()}
        self._totals = {ctx: sum(f.values()) for ctx, f in self._counts.items()}
        self._types = {ctx: len(f) for ctx, f in self._counts.items()}
        # Continuation counts: for a context h of length m < n - 1, cont[h][w] is the
        # number of distinct tokens x with c(x, h, w) > 0.
        cont: dict[tuple, dict[Token, int]] = defaultdict(lambda: defaultdict(int))
        for ctx, followers in self._counts.items():
            if len(ctx) >= 1:
                suffix = ctx[1:]
                for word in followers:
                    cont[suffix][word] += 1
        self._cont = {ctx: dict(f) for ctx, f in cont.items()}
        self._cont_totals = {ctx: sum(f.values()) for ctx, f in self._cont.items()}
        self._cache: dict[tuple, float] = {}
        self._fitted = True
        return self

    def with_smoothing(
        self,
        smoothing: str,
        *,
        k: float = 1.0,
        discount: float = 0.75,
        uniform: int | None = None,
    ) -> NGramLM:
        """The same fitted counts under another smoothing, without counting again.

        Returns a new model that shares this one's (read-only) count tables; the
        arguments mean what they mean in the constructor. Comparing smoothings at one
        order then costs one pass over the training data instead of one per method.
        """
        self._check_fitted()
        other = NGramLM(self.order, smoothing, k=k, discount=discount, uniform=uniform)
        for name in ("vocab", "_counts", "_totals", "_types", "_cont", "_cont_totals"):
            setattr(other, name, getattr(self, name))
        other._cache = {}
        other._fitted = True
        return other

    @property
    def vocab_size(self) -> int:
        """Number of token types the model knows, pads and ``"<UNK>"`` included."""
        return len(self.vocab)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("this NGramLM is not fitted yet: call fit(docs) first")

    def _lookup(self, token: Token) -> Token:
        return token if token in self.vocab else UNK

    # --- scoring ------------------------------------------------------------------

    def prob(self, word: Token, context: Sequence[Token] = ()) -> float:
        """p(word | context); only the last ``order - 1`` context tokens are used."""
        self._check_fitted()
        context = (
            tuple(context)[len(context) - self.order + 1 :] if self.order > 1 else ()
        )
        key = (self._lookup(word), tuple(self._lookup(t) for t in context))
        p = self._cache.get(key)
        if p is None:
            p = self._score(*key)
            self._cache[key] = p
        return p

    def _score(self, word: Token, context: tuple) -> float:
        if self.smoothing == "mle":
            total = self._totals.get(context, 0)
            return self._counts[context].get(word, 0) / total if total else 0.0
        if self.smoothing in ("add_k", "laplace"):
            count = self._counts.get(context, {}).get(word, 0)
            total = self._totals.get(context, 0)
            return (count + self.k) / (total + self.k * self.vocab_size)
        return self._kneser_ney(word, context)

    def _kneser_ney(self, word: Token, context: tuple) -> float:
        d = self.discount
        if not context:  # continuation unigram
            total = self._cont_totals.get((), 0)
            count = self._cont.get((), {}).get(word, 0)
            if self.uniform is None:
                return count / total if total else 0.0
            if total == 0:
                return 1.0 / self.uniform
            types = len(self._cont[()])
            return max(count - d, 0.0) / total + d * types / total / self.uniform
        lower = self._kneser_ney(word, context[1:])
        if context not in self._counts:  # unseen context: alpha = 0, gamma = 1
            return lower
        if len(context) == self.order - 1:  # highest order: raw counts
            count = self._counts[context].get(word, 0)
            total = self._totals[context]
        else:  # lower orders: continuation counts
            count = self._cont.get(context, {}).get(word, 0)
            total = self._cont_totals.get(context, 0)
            if total == 0:  # never preceded by a token (nltk divides by zero here)
                return lower
        alpha = max(count - d, 0.0) / total
        gamma = d * self._types[context] / total
        return alpha + gamma * lower

    def logprob(self, word: Token, context: Sequence[Token] = ()) -> float:
        """Natural log of :meth:`prob` (``-inf`` for probability 0)."""
        p = self.prob(word, context)
        return math.log(p) if p > 0 else -math.inf

    def ngrams(self, docs: Iterable[Sequence[Token]]) -> list[tuple]:
        """The n-grams a model of this order is scored on: one per predicted token."""
        n, out = self.order, []
        for doc in _as_docs(docs):
            padded = pad(doc, n)
            out.extend(
                tuple(padded[i - n + 1 : i + 1]) for i in range(n - 1, len(padded))
            )
        return out

    def perplexity(self, tokens: Iterable) -> float:
        """exp(mean negative log-probability per predicted token).

        ``tokens`` is one document (a sequence of tokens) or a list of documents.
        Returns ``inf`` if some token gets probability 0.
        """
        self._check_fitted()
        grams = self.ngrams(tokens)
        if not grams:
            raise ValueError("perplexity needs at least one document")
        nll = 0.0
        for gram in grams:
            p = self.prob(gram[-1], gram[:-1])
            if p <= 0:
                return math.inf
            nll -= math.log(p)
        return math.exp(nll / len(grams))

    def unseen_fraction(self, tokens: Iterable) -> float:
        """Fraction of the scored n-grams of ``tokens`` never seen in training."""
        self._check_fitted()
        grams = self.ngrams(tokens)
        if not grams:
            raise ValueError("unseen_fraction needs at least one document")
        unseen = sum(g[-1] not in self._counts.get(g[:-1], {}) for g in grams)
        return unseen / len(grams)

    # --- sampling -----------------------------------------------------------------

    def distribution(self, context: Sequence[Token] = ()) -> dict[Token, float]:
        """p(w | context) for every w in the vocabulary except ``"<s>"``, ``"<UNK>"``.

        The values sum to at most 1 (the rest is the mass of the two left out).
        """
        words = sorted(self.vocab - {BOS, UNK}, key=str)
        return {w: self.prob(w, context) for w in words}

    def generate(
        self,
        max_tokens: int = 50,
        *,
        seed: int = 0,
        context: Sequence[Token] = (),
    ) -> list[Token]:
        """Sample up to ``max_tokens`` tokens after ``context``; stops at ``"</s>"``.

        Deterministic for a given seed. Returns the sampled tokens only (no pads).
        """
        self._check_fitted()
        rng = random.Random(seed)
        history = [BOS] * (self.order - 1) + list(context)
        out: list[Token] = []
        for _ in range(max_tokens):
            dist = self.distribution(history)
            words, weights = zip(*dist.items(), strict=True)
            word = rng.choices(words, weights=weights)[0]
            if word == EOS:
                break
            out.append(word)
            history.append(word)
        return out
