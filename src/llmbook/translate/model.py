"""Tokenisers, the model, its loss, decoding and cross-attention (Chapter 9).

English goes through a byte-level BPE of 8,000 tokens learned on the training
sources (:class:`SourceTokenizer`); Chinese through characters
(:class:`~llmbook.data.parallel.CharVocab`) or, for the comparison the chapter
reports, a BPE learned on the Chinese side (:class:`ZhBPE`). The model is Chapter 4's
:class:`~llmbook.model.encoder_decoder.EncoderDecoder`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor, nn

from llmbook.data.parallel import CharVocab
from llmbook.decoding.beam import beam_search
from llmbook.model.attention import padding_mask
from llmbook.model.encoder_decoder import EncoderDecoder


@dataclass
class MTConfig:
    """Model size and training settings of the course translation model."""

    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 3
    d_ff: int = 1024
    context_length: int = 128
    dropout: float = 0.1
    src_vocab_size: int = 8000
    target: str = "chars"  # or "bpe"
    tgt_bpe_size: int = 6000
    min_char_count: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 400
    max_steps: int = 10000
    label_smoothing: float = 0.1
    seed: int = 0


# --- tokenisers ------------------------------------------------------------------


class SourceTokenizer:
    """English side: a byte-level BPE (Hugging Face ``tokenizers``) learned on the
    English of the training pairs, plus ``</s>``, which closes every source."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.eos_id = tokenizer.token_to_id("</s>")
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000) -> SourceTokenizer:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["</s>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )  # fmt: skip
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> SourceTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids + [self.eos_id]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids + [self.eos_id] for e in self.tok.encode_batch(list(texts))]

    def tokens(self, text: str) -> list[str]:
        """The pieces, readable (a leading space shows as ``▁``), and ``</s>``."""
        ids = self.tok.encode(text).ids
        return [self.tok.decode([i]).replace(" ", "▁") for i in ids] + ["</s>"]


class ZhBPE:
    """Chinese side as BPE over characters (no pre-tokenisation at spaces, which
    Chinese lacks, so merges may cross words). Same interface as ``CharVocab``:
    ``encode``/``decode``, ``itos``, the ids of ``<pad> <bos> <eos> <unk>``."""

    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.itos = [
            tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())
        ]
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        self.banned = (self.pad_id, self.bos_id, self.unk_id)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 6000, min_count: int = 2):
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_count,
                                      special_tokens=list(cls.specials),
                                      show_progress=False)  # fmt: skip
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        ids = self.tok.encode(text).ids
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    content_ids = CharVocab.content_ids  # ids up to <eos>, without <bos>/<pad>

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(self.content_ids(ids))


# --- model and loss ----------------------------------------------------------------


def build_model(config: MTConfig, src_vocab: int, tgt_vocab: int) -> EncoderDecoder:
    """The Chapter 4 encoder-decoder (pre-LN, GELU) with the output layer tied to the
    target embedding (one matrix of tgt_vocab x d_model instead of two)."""
    model = EncoderDecoder(
        src_vocab, tgt_vocab, config.d_model, config.n_heads, config.n_layers,
        config.d_ff, config.context_length, config.dropout,
        pre_ln=True, activation="gelu",
    )  # fmt: skip
    for emb in (model.src_emb, model.tgt_emb):  # std d^-1/2: x sqrt(d) gives std 1
        nn.init.normal_(emb.weight, std=config.d_model**-0.5)
    model.out.weight = model.tgt_emb.weight
    return model


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows])


def encode_batch(
    pairs: Sequence[tuple[str, str]],
    src_tok: SourceTokenizer,
    vocab,
    context_length: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(src ids, src lengths, tgt ids), padded on the right, cut to the context.
    tgt rows are ``<bos> tokens <eos>``; the model reads ``tgt[:, :-1]`` and learns
    to predict ``tgt[:, 1:]``."""
    src = [s[:context_length] for s in src_tok.encode_many([en for en, _ in pairs])]
    tgt = [vocab.encode(zh)[: context_length + 1] for _, zh in pairs]
    lengths = torch.tensor([len(s) for s in src])
    return pad_rows(src, src_tok.eos_id), lengths, pad_rows(tgt, vocab.pad_id)


def mt_loss(model, src, lengths, tgt, pad_id: int, label_smoothing: float = 0.0):
    """Teacher-forced cross-entropy per target token, padding ignored."""
    src_mask = padding_mask(lengths, src.shape[1])  # (batch, 1, 1, src_len)
    logits = model(src, tgt[:, :-1], src_mask)  # (batch, tgt_len, V)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), tgt[:, 1:].flatten(), ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )  # fmt: skip


# --- decoding ----------------------------------------------------------------------


@torch.no_grad()
def greedy_translate(model, texts: Sequence[str], src_tok, vocab, max_len: int = 128,
                     batch_size: int = 64) -> list[str]:  # fmt: skip
    """The most likely next token, one step at a time, a batch of similar-length
    sources at once. ``<pad>``, ``<bos>`` and ``<unk>`` are never chosen; a row
    stops at ``<eos>``."""
    model.eval()
    dev = next(model.parameters()).device
    src_all = [s[: model.context_length] for s in src_tok.encode_many(texts)]
    order = sorted(range(len(texts)), key=lambda i: len(src_all[i]))
    result: list[str] = [""] * len(texts)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        src = [src_all[i] for i in idx]
        lengths = torch.tensor([len(s) for s in src])
        ids = pad_rows(src, src_tok.eos_id).to(dev)
        mask = padding_mask(lengths, ids.shape[1]).to(dev)
        memory = model.encode(ids, mask)
        out = torch.full((len(idx), 1), vocab.bos_id, dtype=torch.long, device=dev)
        limit = min(max_len, model.context_length, 2 * ids.shape[1] + 10)
        for _ in range(limit - 1):
            logits = model.decode(out, memory, mask)[:, -1]  # (batch, V)
            logits[:, list(vocab.banned)] = -torch.inf
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
            if bool((out == vocab.eos_id).any(dim=1).all()):
                break
        for i, row in zip(idx, out.cpu(), strict=True):
            result[i] = vocab.decode(row[1:])
    return result


class DecoderAsLM(nn.Module):
    """An encoder-decoder seen as a decoder-only LM for one source sentence.

    The source is encoded once; ``forward(ids)`` returns the decoder's logits
    (batch, seq, V) for target prefixes ``ids`` (batch, seq), every row attending to
    the same memory; ``banned`` token ids get a logit of -1e4 (never chosen).
    ``config`` carries the two fields Chapter 6's ``beam_search`` reads, so the
    course's one beam search runs unchanged (without a KV cache).
    """

    def __init__(
        self, model: EncoderDecoder, src_ids: Sequence[int], banned: Sequence[int] = ()
    ) -> None:
        super().__init__()
        self.banned = list(banned)
        if len(src_ids) == 0:
            raise ValueError("src_ids must hold at least one token")
        self.model = model
        self.train(model.training)  # beam_search restores this mode when it is done
        dev = next(model.parameters()).device
        src = torch.tensor([list(src_ids)], device=dev)
        with torch.no_grad():
            self.memory = model.encode(src)  # (1, src_len, d_model)
        self.config = argparse.Namespace(
            context_length=model.context_length, vocab_size=model.tgt_vocab_size
        )

    def forward(self, ids: Tensor) -> Tensor:
        memory = self.memory.expand(ids.shape[0], -1, -1)
        logits = self.model.decode(ids, memory)  # (batch, seq, V)
        if self.banned:  # tokens that must never be chosen get a tiny probability
            logits[..., self.banned] = -1e4
        return logits


@torch.no_grad()
def beam_translate(model, texts: Sequence[str], src_tok, vocab, num_beams: int = 4,
                   max_len: int = 128, length_penalty: float = 1.0) -> list[str]:  # fmt: skip
    """Beam search (Chapter 6's ``beam_search``) through :class:`DecoderAsLM`."""
    model.eval()
    dev = next(model.parameters()).device
    start = torch.tensor([[vocab.bos_id]], device=dev)
    out = []
    for text in texts:
        src = src_tok.encode(text)[: model.context_length]
        lm = DecoderAsLM(model, src, vocab.banned)
        limit = min(max_len, model.context_length, 2 * len(src) + 10)
        row = beam_search(lm, start, limit - 1, num_beams, eos_id=vocab.eos_id,
                          length_penalty=length_penalty, use_cache=False)  # fmt: skip
        out.append(vocab.decode(row[0, 1:].tolist()))
    return out


@torch.no_grad()
def cross_attention(model, src_ids: Sequence[int], tgt_ids: Sequence[int]) -> Tensor:
    """Cross-attention weights (n_layers, n_heads, tgt_len, src_len) when the
    decoder reads ``tgt_ids`` (starting with ``<bos>``) for the source ``src_ids``:
    row i is where the decoder looked while predicting target token i + 1."""
    model.eval()
    dev = next(model.parameters()).device
    src = torch.tensor([list(src_ids)], device=dev)
    tgt = torch.tensor([list(tgt_ids)], device=dev)
    memory = model.encode(src)
    x = model._embed(model.tgt_emb, tgt)
    maps = []
    for block in model.decoder:
        x, w = block(x, memory, return_weights=True)
        maps.append(w[0])  # (n_heads, tgt_len, src_len)
    return torch.stack(maps).cpu()
