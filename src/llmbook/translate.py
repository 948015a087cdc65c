"""English -> Chinese translation with the Chapter 4 encoder-decoder (Chapter 9).

    python -m llmbook.translate --out DIR [--minutes 20] [--seed 0]

trains the course's small translation model on the shipped parallel snapshot
(:mod:`llmbook.data.parallel`), scores it on the held-out test sources and writes
``config.json`` and ``model.safetensors`` (fp16) to ``DIR``. The shipped
``src/llmbook/weights/course-mt`` was made with ``--minutes 20`` under
``OMP_NUM_THREADS=2`` on a CPU; ``load_mt()`` loads it.

Also here: the source and target tokenisers (the course BPE on English, characters on
Chinese), greedy decoding, an adapter that lets Chapter 6's ``beam_search`` run on an
encoder-decoder, cross-attention maps, BLEU with sacrebleu's ``zh`` tokeniser, and the
copy and dictionary-lookup baselines.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from llmbook.data.parallel import CharVocab, Pair, load_parallel, references_by_source
from llmbook.decoding.beam import beam_search
from llmbook.metrics.bleu import _RULES as _13A_RULES  # the regexp part of 13a
from llmbook.metrics.bleu import BLEUStats, bleu_from_stats, ngram_counts
from llmbook.model.attention import padding_mask
from llmbook.model.encoder_decoder import EncoderDecoder
from llmbook.model.pretrained import WEIGHTS_DIR, load_tokenizer
from llmbook.train.optim import cosine_schedule, param_groups_for_weight_decay

__all__ = [
    "MTConfig",
    "SourceTokenizer",
    "build_model",
    "encode_batch",
    "mt_loss",
    "greedy_translate",
    "DecoderAsLM",
    "beam_translate",
    "cross_attention",
    "tokenize_zh",
    "corpus_bleu_zh",
    "copy_baseline",
    "DictionaryBaseline",
    "train_mt",
    "sample_sources",
    "evaluate_mt",
    "save_mt",
    "load_mt",
]


@dataclass
class MTConfig:
    """Model size and training settings of the course translation model."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    context_length: int = 64
    dropout: float = 0.1
    min_char_count: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 30000
    label_smoothing: float = 0.1
    seed: int = 0


# --- tokenisers ------------------------------------------------------------------


class SourceTokenizer:
    """English side: the course byte-level BPE (``course-gpt``) plus an end token.

    Its 2,048 tokens were learned on Python's documentation, so common English words
    are one or two tokens; the ``<|endoftext|>`` token closes every source.
    """

    def __init__(self) -> None:
        self.hf = load_tokenizer("course-gpt")
        self.eos_id = self.hf.eos_token_id
        self.vocab_size = len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf(text).input_ids + [self.eos_id]

    def tokens(self, text: str) -> list[str]:
        """The pieces, readable (``Ġ`` marks a leading space), with the end token."""
        ids = self.encode(text)
        return [self.hf.decode([i]) for i in ids[:-1]] + ["</s>"]


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


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows])


def encode_batch(
    pairs: Sequence[tuple[str, str]],
    src_tok: SourceTokenizer,
    vocab: CharVocab,
    context_length: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(src ids, src lengths, tgt ids), padded on the right, cut to the context.

    tgt rows are ``<bos> chars <eos>``; the model reads ``tgt[:, :-1]`` and learns
    to predict ``tgt[:, 1:]``.
    """
    src = [src_tok.encode(en)[:context_length] for en, _ in pairs]
    tgt = [vocab.encode(zh)[: context_length + 1] for _, zh in pairs]
    lengths = torch.tensor([len(s) for s in src])
    return _pad(src, src_tok.eos_id), lengths, _pad(tgt, vocab.pad_id)


def mt_loss(
    model: EncoderDecoder,
    src: Tensor,
    lengths: Tensor,
    tgt: Tensor,
    pad_id: int,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Teacher-forced cross-entropy per target token, padding ignored."""
    src_mask = padding_mask(lengths, src.shape[1])  # (batch, 1, 1, src_len)
    logits = model(src, tgt[:, :-1], src_mask)  # (batch, tgt_len, V)
    return F.cross_entropy(
        logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )  # fmt: skip


# --- decoding ----------------------------------------------------------------------


@torch.no_grad()
def greedy_translate(
    model: EncoderDecoder,
    texts: Sequence[str],
    src_tok: SourceTokenizer,
    vocab: CharVocab,
    max_len: int = 32,
) -> list[str]:
    """The most likely next character, one step at a time (a batch at once).

    ``<pad>``, ``<bos>`` and ``<unk>`` are never chosen (they are not text); a row
    stops at ``<eos>``.
    """
    model.eval()
    src = [src_tok.encode(t)[: model.context_length] for t in texts]
    lengths = torch.tensor([len(s) for s in src])
    dev = next(model.parameters()).device
    ids = _pad(src, src_tok.eos_id).to(dev)
    mask = padding_mask(lengths, ids.shape[1]).to(dev)
    memory = model.encode(ids, mask)
    out = torch.full((len(texts), 1), vocab.bos_id, dtype=torch.long, device=dev)
    banned = list(vocab.banned)
    for _ in range(max_len - 1):
        logits = model.decode(out, memory, mask)[:, -1]  # (batch, V)
        logits[:, banned] = -torch.inf
        out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        if bool((out == vocab.eos_id).any(dim=1).all()):
            break
    return [vocab.decode(row[1:]) for row in out.cpu()]


class DecoderAsLM(nn.Module):
    """An encoder-decoder seen as a decoder-only LM for one source sentence.

    The source is encoded once; ``forward(ids)`` returns the decoder's logits
    (batch, seq, V) for target prefixes ``ids`` (batch, seq), every row attending to
    the same memory; ``banned`` token ids get a logit of -1e4 (never chosen).
    ``config`` carries the two fields Chapter 6's ``beam_search``
    reads, so the course's one beam search runs unchanged (without a KV cache).
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
def beam_translate(
    model: EncoderDecoder,
    texts: Sequence[str],
    src_tok: SourceTokenizer,
    vocab: CharVocab,
    num_beams: int = 4,
    max_len: int = 32,
    length_penalty: float = 1.0,
) -> list[str]:
    """Beam search (Chapter 6's ``beam_search``) through :class:`DecoderAsLM`."""
    model.eval()
    dev = next(model.parameters()).device
    start = torch.tensor([[vocab.bos_id]], device=dev)
    out = []
    for text in texts:
        lm = DecoderAsLM(
            model, src_tok.encode(text)[: model.context_length], vocab.banned
        )
        row = beam_search(lm, start, max_len - 1, num_beams, eos_id=vocab.eos_id,
                          length_penalty=length_penalty, use_cache=False)  # fmt: skip
        out.append(vocab.decode(row[0, 1:].tolist()))
    return out


@torch.no_grad()
def cross_attention(
    model: EncoderDecoder, src_ids: Sequence[int], tgt_ids: Sequence[int]
) -> Tensor:
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


# --- metrics -----------------------------------------------------------------------

# sacrebleu's zh tokeniser puts spaces around each character in these code-point
# ranges. Its table writes two ranges with five hex digits in a \u escape
# ("\u20000", "\u2f800"), which Python reads as one character plus a digit; the
# effective ranges are therefore U+2001-U+2A6D and U+2F81-U+2FA1, kept here so the
# scores stay equal to sacrebleu's (tests/test_translation.py checks every code point).
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
    for pattern, replacement in _13A_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


def _bleu_stats_zh(hyp: str, refs: Sequence[str]) -> BLEUStats:
    hyp_tokens = tokenize_zh(hyp)
    ref_tokens = [tokenize_zh(r) for r in refs]
    max_ref: Counter = Counter()
    for ref in ref_tokens:
        max_ref |= ngram_counts(ref, 4)
    matches, totals = [0] * 4, [0] * 4
    for gram, count in ngram_counts(hyp_tokens, 4).items():
        totals[len(gram) - 1] += count
        matches[len(gram) - 1] += min(count, max_ref[gram])
    ref_len = min(
        (len(r) for r in ref_tokens), key=lambda n: (abs(n - len(hyp_tokens)), n)
    )
    return BLEUStats(len(hyp_tokens), ref_len, matches, totals)


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
        total = total + _bleu_stats_zh(hyp, refs)
    return bleu_from_stats(total)


# --- baselines ---------------------------------------------------------------------


def copy_baseline(texts: Sequence[str]) -> list[str]:
    """Output the English source unchanged (what an untranslated string scores)."""
    return list(texts)


class DictionaryBaseline:
    """Word-by-word lookup in the training pairs.

    The whole source if it is a training source; otherwise each word (also tried as
    ``to <word>``) replaced by its most frequent one-word translation, unknown words
    copied. No model, no reordering: what an afternoon with a dictionary gives.
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


# --- training, saving, loading -----------------------------------------------------


def _evaluate_loss(model, batches, pad_id) -> float:
    model.eval()
    with torch.no_grad():
        losses = [float(mt_loss(model, *b, pad_id)) for b in batches]
    model.train()
    return sum(losses) / len(losses)


def _collate(src: list[list[int]], tgt: list[list[int]], src_pad: int, tgt_pad: int):
    lengths = torch.tensor([len(r) for r in src])
    return _pad(src, src_pad), lengths, _pad(tgt, tgt_pad)


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random):
    """Shuffled batches of indices of similar length (little padding): shuffle, sort
    chunks of 50 batches by length, cut into batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 50 * batch_size
    batches = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i : i + chunk], key=lambda j: lengths[j])
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train_mt(
    config: MTConfig, minutes: float | None = None, log_every: int = 100
) -> tuple[EncoderDecoder, CharVocab, dict]:
    """Train on the snapshot's train split; stop at ``max_steps`` or after about
    ``minutes`` of wall time (the cosine schedule's length is re-planned every 50
    steps from the measured speed). Returns the model (eval mode), the character vocabulary and
    a history (step, train loss, val loss, seconds)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    train = [(p.en, p.zh) for p in load_parallel("train")]
    val = [(p.en, p.zh) for p in load_parallel("val")][:512]
    src_tok = SourceTokenizer()
    vocab = CharVocab.build((zh for _, zh in train), config.min_char_count)
    n = config.context_length
    src_ids = [r[: n - 1] + [src_tok.eos_id]
               for r in src_tok.hf([en for en, _ in train]).input_ids]  # fmt: skip
    tgt_ids = [vocab.encode(zh)[: n + 1] for _, zh in train]
    model = build_model(config, src_tok.vocab_size, len(vocab))
    groups = param_groups_for_weight_decay(model, config.weight_decay)
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))
    val_batches = [encode_batch(val[i : i + 128], src_tok, vocab, n)
                   for i in range(0, len(val), 128)]  # fmt: skip
    history: dict[str, list] = {
        "step": [],
        "train_loss": [],
        "val_loss": [],
        "seconds": [],
    }
    start, running, step, total = time.time(), [], 0, config.max_steps
    warmup = config.warmup_steps
    lengths = [len(s) + len(t) for s, t in zip(src_ids, tgt_ids, strict=True)]
    batches: list[list[int]] = []
    model.train()
    while step < total:
        if not batches:
            batches = _length_batches(lengths, config.batch_size, rng)
        idx = batches.pop()
        batch = _collate([src_ids[i] for i in idx], [tgt_ids[i] for i in idx],
                         src_tok.eos_id, vocab.pad_id)  # fmt: skip
        lr = cosine_schedule(step, max_lr=config.lr, min_lr=config.lr / 20,
                             warmup_steps=warmup, total_steps=total)  # fmt: skip
        for g in opt.param_groups:
            g["lr"] = lr
        loss = mt_loss(model, *batch, vocab.pad_id, config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
        step += 1
        elapsed = time.time() - start
        if minutes is not None and step % 50 == 0:  # re-plan on the measured speed
            planned = int(minutes * 60 * step / elapsed)
            total = max(step + 1, min(config.max_steps, planned))
            warmup = min(config.warmup_steps, total)
        if step % log_every == 0 or step == total:
            val_loss = _evaluate_loss(model, val_batches, vocab.pad_id)
            history["step"].append(step)
            history["train_loss"].append(round(sum(running) / len(running), 4))
            history["val_loss"].append(round(val_loss, 4))
            history["seconds"].append(round(elapsed, 1))
            print(f"step {step}/{total}  train {history['train_loss'][-1]:.3f}  "
                  f"val {val_loss:.3f}  {elapsed:.0f}s", flush=True)  # fmt: skip
            running = []
    return model.eval(), vocab, history


def save_mt(
    model: EncoderDecoder, vocab: CharVocab, config: MTConfig, directory: str | Path,
    metadata: dict | None = None,
) -> Path:  # fmt: skip
    """``config.json`` (config, the character vocabulary, metadata) and
    ``model.safetensors`` in float16 (the tied output matrix stored once)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half().contiguous()
             for k, v in model.state_dict().items() if k != "out.weight"}  # fmt: skip
    save_file(state, str(directory / "model.safetensors"))
    meta = {"architecture": "EncoderDecoder", "config": asdict(config),
            "source_tokenizer": "course-gpt", "target_chars": vocab.itos[4:],
            **(metadata or {})}  # fmt: skip
    (directory / "config.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=1)
    )
    return directory


def load_mt(
    name_or_path: str | Path = "course-mt", device: str | torch.device = "cpu"
) -> tuple[EncoderDecoder, SourceTokenizer, CharVocab, dict]:
    """The model saved by :func:`save_mt` (shipped: ``"course-mt"``), in float32 and
    eval mode, with its two tokenisers and its ``config.json``."""
    directory = Path(name_or_path)
    if not directory.is_dir():
        directory = WEIGHTS_DIR / str(name_or_path)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"{directory} has no config.json; train one with "
            "`python -m llmbook.translate --out DIR`"
        )
    meta = json.loads((directory / "config.json").read_text())
    config = MTConfig(**meta["config"])
    vocab = CharVocab(meta["target_chars"])
    src_tok = SourceTokenizer()
    model = build_model(config, src_tok.vocab_size, len(vocab))
    state = {
        k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()
    }
    state["out.weight"] = state["tgt_emb.weight"]
    model.load_state_dict(state)
    return model.to(device).eval(), src_tok, vocab, meta


def sample_sources(pairs: Sequence[Pair], max_sources: int | None = 200) -> list[str]:
    """The distinct English sources of ``pairs`` in snapshot order, thinned to at
    most ``max_sources`` by taking every k-th (so each origin keeps its share)."""
    sources = list(references_by_source(pairs))
    if max_sources is None or len(sources) <= max_sources:
        return sources
    step = len(sources) / max_sources
    return [sources[int(i * step)] for i in range(max_sources)]


def evaluate_mt(
    model: EncoderDecoder, src_tok: SourceTokenizer, vocab: CharVocab,
    pairs: Sequence[Pair], num_beams: int = 4, max_sources: int | None = 200,
) -> dict[str, float]:  # fmt: skip
    """chrF and BLEU (zh) of greedy and beam output on ``pairs`` grouped by source
    (the evenly spaced sample :func:`sample_sources`)."""
    from llmbook.metrics import corpus_chrf

    refs = references_by_source(pairs)
    sources = sample_sources(pairs, max_sources)
    ref_lists = [refs[s] for s in sources]
    width = max(len(r) for r in ref_lists)
    streams = [[r[j] if j < len(r) else None for r in ref_lists] for j in range(width)]
    results = {"n_sources": len(sources)}
    outputs = {
        "greedy": greedy_translate(model, sources, src_tok, vocab),
        f"beam{num_beams}": beam_translate(model, sources, src_tok, vocab, num_beams),
    }
    for name, hyps in outputs.items():
        results[f"{name}_chrf"] = round(corpus_chrf(hyps, streams), 2)
        results[f"{name}_bleu"] = round(corpus_bleu_zh(hyps, ref_lists), 2)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the course's en->zh model.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--max-steps", type=int, default=MTConfig.max_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-sources", type=int, default=200)
    args = parser.parse_args(argv)
    config = MTConfig(max_steps=args.max_steps, seed=args.seed)
    t0 = time.time()
    model, vocab, history = train_mt(config, args.minutes)
    train_seconds = time.time() - t0
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"history": history, "train_seconds": round(train_seconds),
            "threads": torch.get_num_threads(), "n_params": n_params,
            "command": f"python -m llmbook.translate --out DIR --minutes {args.minutes} "
                       f"--max-steps {args.max_steps} --seed {args.seed}"}  # fmt: skip
    save_mt(model, vocab, config, args.out, meta)  # saved before the (slow) scoring
    results = evaluate_mt(model, SourceTokenizer(), vocab, load_parallel("test"),
                          max_sources=args.eval_sources)  # fmt: skip
    print(json.dumps(results), flush=True)
    save_mt(model, vocab, config, args.out, {**meta, "test": results})


if __name__ == "__main__":
    main()
