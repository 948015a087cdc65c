"""Byte-level BPE with Hugging Face ``tokenizers``, and THE course tokenizer (Chapter 2).

Chapter 2 also builds BPE from scratch (:mod:`llmbook.data.bpe`) and checks that it
learns the same merges as the library trainer used here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmbook.data.splits import course_splits

__all__ = ["EOS_TOKEN", "MASK_TOKEN", "train_hf_bpe", "course_tokenizer", "encode_docs"]

#: The end-of-text token that separates documents (GPT-2's spelling).
EOS_TOKEN = "<|endoftext|>"
#: The masked LM's mask token, added to the course tokenizer (id = its old size).
MASK_TOKEN = "<|mask|>"


def train_hf_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (EOS_TOKEN,),
) -> Tokenizer:
    """A byte-level BPE trained with Hugging Face ``tokenizers`` (GPT-2 style).

    Pre-tokenisation is GPT-2's regex with ``add_prefix_space=False``; the initial
    alphabet is all 256 bytes, so any text can be encoded (no unknown tokens);
    ``vocab_size`` counts the special tokens, the 256 bytes and the merges.
    Deterministic: the trainer breaks ties between equally frequent pairs by their
    token ids.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer


#: The tokenizer that ships with the course models (``tokenizer.json`` of
#: ``"course-gpt"``): ``course_tokenizer(2048, "python")``, trained once and saved.
SHIPPED_TOKENIZER = (
    Path(__file__).resolve().parents[1] / "weights" / "course-gpt" / "tokenizer.json"
)
_SHIPPED = {(2048, "python"): SHIPPED_TOKENIZER}


@functools.cache
def _course_tokenizer(vocab_size: int, corpus: str) -> str:
    shipped = _SHIPPED.get((vocab_size, corpus))
    if shipped is not None and shipped.is_file():
        tokenizer = Tokenizer.from_file(str(shipped))
        if tokenizer.get_vocab_size() == vocab_size:
            return tokenizer.to_str()
    return train_hf_bpe(course_splits(corpus).train, vocab_size).to_str()


def course_tokenizer(vocab_size: int = 2048, corpus: str = "python") -> Tokenizer:
    """THE course tokenizer: byte-level BPE trained on ``course_splits().train`` only.

    Validation and test documents are never seen in training, so their statistics
    (for example the tokens per character) are honest held-out numbers. Special
    token: ``<|endoftext|>`` (id 0). The default, ``(2048, "python")``, is the
    tokenizer the course models ship with, so it is read from
    :data:`SHIPPED_TOKENIZER` instead of being trained again (the tests check that
    the file equals a fresh training); other sizes or corpora are trained. Cached
    in-process; each call returns a new ``tokenizers.Tokenizer`` object, so changing
    one (e.g. enabling padding) does not affect others.
    """
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size must be >= 257 (256 bytes + EOS), got {vocab_size}"
        )
    return Tokenizer.from_str(_course_tokenizer(vocab_size, corpus))


def encode_docs(tokenizer: Tokenizer, docs: Sequence[str]) -> list[list[int]]:
    """Token ids of each document (no special tokens added)."""
    return [e.ids for e in tokenizer.encode_batch(list(docs), add_special_tokens=False)]
