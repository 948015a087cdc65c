"""From token ids to training batches (Chapter 2; used by Chapter 5's training loop).

* :func:`pack_blocks` concatenates documents with EOS separators and cuts fixed
  blocks; :class:`BlockDataset` / :func:`make_dataloader` serve them through a
  PyTorch ``DataLoader`` (evaluation, fine-tuning datasets).
* :func:`window_iterator` draws windows at seeded random offsets of the token
  stream: the one sampler pretraining, data-parallel training and the benchmark use.
* :func:`course_data` tokenises the course split once for training.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from llmbook.data.splits import course_splits
from llmbook.data.tokenization import EOS_TOKEN, course_tokenizer, encode_docs

__all__ = [
    "pack_blocks",
    "BlockDataset",
    "make_dataloader",
    "window_iterator",
    "CourseData",
    "course_data",
]


def pack_blocks(
    token_lists: Iterable[Sequence[int]], context_length: int, eos_id: int
) -> torch.Tensor:
    """Concatenate documents (each followed by ``eos_id``) and cut fixed-length blocks.

    The stream ``doc0 EOS doc1 EOS ...`` is cut into consecutive windows of
    ``context_length + 1`` tokens that overlap by one token (block ``i`` is
    ``stream[i*L : i*L + L + 1]``), so that every token after the first is a
    prediction target exactly once. The incomplete tail is dropped.

    Returns:
        ``torch.long`` tensor of shape ``(n_blocks, context_length + 1)``.

    Raises:
        ValueError: ``context_length < 1``, or too few tokens for one block.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        stream.append(eos_id)
    n_blocks = (len(stream) - 1) // context_length
    if n_blocks < 1:
        raise ValueError(
            f"{len(stream)} tokens (with EOS) are too few for one block of "
            f"context_length + 1 = {context_length + 1}"
        )
    data = torch.tensor(stream[: n_blocks * context_length + 1], dtype=torch.long)
    return data.unfold(0, context_length + 1, context_length).contiguous()


class BlockDataset(Dataset):
    """``(x, y)`` pairs from packed blocks: ``x = block[:-1]``, ``y = block[1:]``."""

    def __init__(self, blocks: torch.Tensor) -> None:
        if blocks.ndim != 2 or blocks.shape[1] < 2:
            raise ValueError(
                f"blocks must have shape (n_blocks, context_length + 1) with "
                f"context_length >= 1, got {tuple(blocks.shape)}"
            )
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.blocks[i]
        return block[:-1], block[1:]


def make_dataloader(
    blocks: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0
) -> DataLoader:
    """A ``DataLoader`` of ``(x, y)``, each ``(batch, context_length)`` long tensors.

    Shuffling uses its own ``torch.Generator`` seeded with ``seed``, so the batch
    order is reproducible and independent of the global RNG. The last batch may be
    smaller.
    """
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        BlockDataset(blocks),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
    )


def window_iterator(
    stream: Tensor,
    context_length: int,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
) -> Iterator[Tensor]:
    """Endless batches of windows, (batch_size, context_length + 1), that start at
    seeded random offsets of the token ``stream`` (nanoGPT's sampler).

    Unlike fixed blocks, a window can start anywhere, so over many epochs the model
    sees each token at many positions and with many different left contexts: a
    cheap and effective regulariser when a small corpus is read many times. Every
    window has the same length, so every batch holds the same number of targets (the
    condition under which data-parallel ranks average to the global gradient).
    ``start_step`` skips that many batches (for resuming).
    """
    if stream.ndim != 1:
        raise ValueError(f"stream must be 1-D, got shape {tuple(stream.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_starts = stream.numel() - context_length  # last start leaves L + 1 tokens
    if n_starts < 1:
        raise ValueError(
            f"{stream.numel()} tokens are too few for one window of "
            f"context_length + 1 = {context_length + 1}"
        )
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context_length + 1)
    step = 0
    while True:
        starts = torch.randint(n_starts, (batch_size, 1), generator=generator)
        if step >= start_step:
            yield stream[starts + offsets]  # (batch_size, context_length + 1)
        step += 1


@dataclass
class CourseData:
    """The course corpus, tokenised for training: the training stream, the
    validation documents, and the EOS id that separates documents."""

    train_stream: Tensor  # (n_tokens,) long: doc0 EOS doc1 EOS ...
    val_docs: list[list[int]]  # token ids of each validation document, no EOS
    eos_id: int

    @property
    def train_tokens(self) -> int:
        return self.train_stream.numel()

    @property
    def val_predictions(self) -> int:
        """Number of tokens perplexity averages over (each document + its EOS)."""
        return sum(len(doc) + 1 for doc in self.val_docs)


def course_data(vocab_size: int = 2048, corpus: str = "python") -> CourseData:
    """Tokenise the course split (Chapter 2): the training stream and validation docs.

    Cached in-process (the encoding is done once per ``(vocab_size, corpus)``); every
    call returns a new ``CourseData`` with its own tensor and lists, so callers may
    modify what they get.
    """
    stream, val, eos_id = _course_data(vocab_size, corpus)
    return CourseData(stream.clone(), [list(doc) for doc in val], eos_id)


@functools.cache
def _course_data(
    vocab_size: int, corpus: str
) -> tuple[Tensor, tuple[tuple[int, ...], ...], int]:
    tokenizer = course_tokenizer(vocab_size, corpus=corpus)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    splits = course_splits(corpus)
    train = encode_docs(tokenizer, splits.train)
    val = encode_docs(tokenizer, splits.val)
    stream = [token for doc in train for token in (*doc, eos_id)]
    stream_tensor = torch.tensor(stream, dtype=torch.long)
    return stream_tensor, tuple(tuple(doc) for doc in val), eos_id
