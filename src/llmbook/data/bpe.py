"""Byte-level byte-pair encoding (BPE), written from scratch (Chapter 2).

Training (:func:`train_bpe`):

1. Pre-tokenise every text with GPT-2's regular expression (:data:`GPT2_PATTERN`):
   words with their leading space, numbers, punctuation runs, whitespace. Merges never
   cross a pre-token boundary. Identical pre-tokens are counted once, with a weight.
2. Start with one token per byte (ids 0-255 are the byte values), so every string,
   in any script, can be encoded: there is no unknown token.
3. Repeat until the vocabulary has ``vocab_size`` tokens: count every adjacent pair
   of tokens (weighted by pre-token frequency; overlapping occurrences such as the
   two ``(a, a)`` in ``aaa`` both count), merge the most frequent pair everywhere
   (left to right, non-overlapping) into a new token with the next id.

Tie-breaking rule: among pairs with the same count, the pair with the smallest
``(rank(left), rank(right))`` wins, compared lexicographically. With the default
``byte_order="bytes"`` the rank of a byte token is its byte value; with
``byte_order="gpt2"`` it is the position of the byte's printable stand-in character
(:func:`bytes_to_unicode`) in code-point order, which is how Hugging Face
``tokenizers`` numbers its initial alphabet. Merged tokens rank after all bytes, in
creation order, in both cases. With ``"gpt2"`` this function reproduces the
``tokenizers`` BPE trainer merge for merge (tested in ``tests/unit/data/test_bpe.py``).

Encoding (:meth:`BPETokenizer.encode`) applies the learned merges to each pre-token
in order of merge rank (earliest merge first), exactly as GPT-2 does; decoding joins
the bytes, so ``decode(encode(s)) == s`` for every string ``s``.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise

import regex

__all__ = [
    "GPT2_PATTERN",
    "pretokenize",
    "bytes_to_unicode",
    "train_bpe",
    "BPETokenizer",
]

#: GPT-2's pre-tokenisation pattern (also used by ``tokenizers``' ByteLevel).
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_PRETOKENIZE = regex.compile(GPT2_PATTERN)

Pair = tuple[int, int]


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into GPT-2 pre-tokens; ``"".join(result) == text``."""
    return _PRETOKENIZE.findall(text)


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character.

    Printable Latin-1 bytes map to themselves; the other 68 (control characters,
    space, ...) map to code points 256 and up, in byte order. So a space becomes
    ``"Ġ"`` (U+0120) and a newline ``"Ċ"`` (U+010A).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _byte_ranks(byte_order: str) -> list[int]:
    if byte_order == "bytes":
        return list(range(256))
    if byte_order == "gpt2":
        chars = bytes_to_unicode()
        order = sorted(range(256), key=lambda b: ord(chars[b]))
        ranks = [0] * 256
        for rank, b in enumerate(order):
            ranks[b] = rank
        return ranks
    raise ValueError(f"byte_order must be 'bytes' or 'gpt2', got {byte_order!r}")


def _merge_word(word: tuple[int, ...], pair: Pair, new_id: int) -> tuple[int, ...]:
    """Replace every occurrence of ``pair`` in ``word`` (left to right)."""
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(
    texts: Iterable[str], vocab_size: int, *, byte_order: str = "bytes"
) -> tuple[list[Pair], dict[int, bytes]]:
    """Learn byte-level BPE merges (see the module docstring for the algorithm).

    Args:
        texts: training documents.
        vocab_size: final vocabulary size, 256 bytes included (so
            ``vocab_size - 256`` merges, fewer if no pair is left to merge).
        byte_order: ``"bytes"`` or ``"gpt2"``: how ties between equally frequent
            pairs are broken (module docstring).

    Returns:
        ``(merges, vocab)``: ``merges[k] = (left_id, right_id)`` created token
        ``256 + k``; ``vocab`` maps every id to its bytes.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be >= 256 (the bytes), got {vocab_size}")
    ranks = _byte_ranks(byte_order)
    word_counts = Counter(
        tuple(piece.encode("utf-8")) for text in texts for piece in pretokenize(text)
    )
    words = list(word_counts)
    counts = [word_counts[w] for w in words]

    pair_counts: Counter[Pair] = Counter()
    where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> word indices
    for index, word in enumerate(words):
        for pair in pairwise(word):
            pair_counts[pair] += counts[index]
            where[pair].add(index)

    vocab = {i: bytes([i]) for i in range(256)}
    merges: list[Pair] = []
    while len(vocab) < vocab_size and pair_counts:
        best = max(
            pair_counts,
            key=lambda p: (pair_counts[p], -ranks[p[0]], -ranks[p[1]]),
        )
        new_id = len(vocab)
        merges.append(best)
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        ranks.append(new_id)  # merged tokens rank after every byte, in order
        for index in where.pop(best):
            old = words[index]
            new = _merge_word(old, best, new_id)
            for pair in pairwise(old):  # remove the old word's pairs ...
                pair_counts[pair] -= counts[index]
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
                if pair != best:
                    where[pair].discard(index)
            for pair in pairwise(new):  # ... and add the new word's pairs
                pair_counts[pair] += counts[index]
                where[pair].add(index)
            words[index] = new
        pair_counts.pop(best, None)
    return merges, vocab


class BPETokenizer:
    """Encode and decode with merges from :func:`train_bpe`.

    ``decode(encode(text)) == text`` for every ``str`` (any Unicode, including
    emoji and unpaired surrogates' absence: ``text`` must be encodable as UTF-8).
    """

    def __init__(self, merges: Sequence[Pair], vocab: dict[int, bytes] | None = None):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}
        if vocab is None:
            vocab = {i: bytes([i]) for i in range(256)}
            for k, (a, b) in enumerate(self.merges):
                vocab[256 + k] = vocab[a] + vocab[b]
        self.vocab = dict(vocab)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_piece(self, piece: str) -> list[int]:
        if piece in self._cache:
            return self._cache[piece]
        word = list(piece.encode("utf-8"))
        while len(word) > 1:
            pairs = set(pairwise(word))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            word = list(_merge_word(tuple(word), best, 256 + self.ranks[best]))
        self._cache[piece] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: pre-tokenise, then merge by rank in each piece."""
        return [i for piece in pretokenize(text) for i in self._encode_piece(piece)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (invalid UTF-8 from a partial sequence becomes U+FFFD)."""
        try:
            data = b"".join(self.vocab[i] for i in ids)
        except KeyError as err:
            raise ValueError(
                f"token id {err.args[0]} is not in the vocabulary of size "
                f"{self.vocab_size}"
            ) from None
        return data.decode("utf-8", errors="replace")

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` spelled with GPT-2's printable byte characters."""
        chars = bytes_to_unicode()
        return ["".join(chars[b] for b in self.vocab[i]) for i in self.encode(text)]
