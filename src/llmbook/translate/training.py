"""Training, saving and loading the course translation model (Chapter 9)."""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from llmbook.data.parallel import CharVocab, load_parallel
from llmbook.model.pretrained import WEIGHTS_DIR
from llmbook.train.optim import param_groups_for_weight_decay
from llmbook.train.schedule import cosine_schedule
from llmbook.train.step import cpu_has_bf16, run_steps
from llmbook.translate.model import (
    MTConfig,
    SourceTokenizer,
    ZhBPE,
    build_model,
    encode_batch,
    mt_loss,
    pad_rows,
)


def build_tokenizers(config: MTConfig, train_pairs) -> tuple[SourceTokenizer, object]:
    """The English BPE and the Chinese vocabulary (characters or BPE), learned on
    the training pairs only."""
    src_tok = SourceTokenizer.train((p.en for p in train_pairs), config.src_vocab_size)
    if config.target == "chars":
        vocab = CharVocab.build((p.zh for p in train_pairs), config.min_char_count)
    elif config.target == "bpe":
        vocab = ZhBPE.train((p.zh for p in train_pairs), config.tgt_bpe_size,
                            config.min_char_count)  # fmt: skip
    else:
        raise ValueError(f"target must be 'chars' or 'bpe', got {config.target!r}")
    return src_tok, vocab


def length_batches(lengths, batch_size: int, rng: random.Random) -> list[list[int]]:
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


def _autocast(enabled: bool):
    if enabled:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_mt(config: MTConfig, log_path: str | Path | None = None,
             checkpoint: str | Path | None = None, log_every: int = 100,
             val_every: int = 500, bf16: bool | None = None):  # fmt: skip
    """Train for ``config.max_steps`` steps on the snapshot's train split (a fixed
    budget, cosine schedule). Every ``log_every`` steps the mean train loss is
    logged (and appended to ``log_path`` as a JSON line); every ``val_every`` the
    validation loss too, and the model is saved to ``checkpoint``. ``bf16``: compute
    in bfloat16 autocast (default: where the CPU supports it natively).
    Returns (model in eval mode, source tokenizer, target vocabulary, history)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    bf16 = cpu_has_bf16() if bf16 is None else bf16
    train_pairs = load_parallel("train")
    val = [(p.en, p.zh) for p in load_parallel("val")][:512]
    src_tok, vocab = build_tokenizers(config, train_pairs)
    n = config.context_length
    src_ids = [s[:n] for s in src_tok.encode_many([p.en for p in train_pairs])]
    tgt_ids = [vocab.encode(p.zh)[: n + 1] for p in train_pairs]
    model = build_model(config, src_tok.vocab_size, len(vocab))
    groups = param_groups_for_weight_decay(model, config.weight_decay)
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))
    val_batches = [encode_batch(val[i : i + 128], src_tok, vocab, n)
                   for i in range(0, len(val), 128)]  # fmt: skip
    history: dict[str, list] = {"step": [], "train_loss": [], "seconds": [],
                                "val_step": [], "val_loss": []}  # fmt: skip
    lengths = [len(s) + len(t) for s, t in zip(src_ids, tgt_ids, strict=True)]
    start, running = time.time(), []
    log = open(log_path, "a") if log_path else None  # noqa: SIM115

    def batches():
        pending = []
        while True:
            if not pending:
                pending = length_batches(lengths, config.batch_size, rng)
            idx = pending.pop()
            yield (pad_rows([src_ids[i] for i in idx], src_tok.eos_id),
                   torch.tensor([len(src_ids[i]) for i in idx]),
                   pad_rows([tgt_ids[i] for i in idx], vocab.pad_id))  # fmt: skip

    def loss_fn(model, batch):
        return mt_loss(model, *batch, vocab.pad_id, config.label_smoothing)

    def after_step(step: int, loss: float) -> None:
        step += 1  # counted from 1 in the log
        running.append(loss)
        if step % log_every != 0 and step != config.max_steps:
            return
        row = {"step": step, "train_loss": round(sum(running) / len(running), 4),
               "seconds": round(time.time() - start, 1)}  # fmt: skip
        running.clear()
        if step % val_every == 0 or step == config.max_steps:
            model.eval()
            with torch.no_grad(), _autocast(bf16):
                vl = [float(mt_loss(model, *b, vocab.pad_id)) for b in val_batches]
            model.train()
            row["val_loss"] = round(sum(vl) / len(vl), 4)
            history["val_step"].append(step)
            history["val_loss"].append(row["val_loss"])
            if checkpoint:
                save_mt(model, src_tok, vocab, config, checkpoint,
                        {"history": history, "checkpoint_step": step})  # fmt: skip
        for k in ("step", "train_loss", "seconds"):
            history[k].append(row[k])
        print(json.dumps(row), flush=True)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    run_steps(
        model, opt, batches(), stop=config.max_steps,
        lr=lambda step: cosine_schedule(
            step, max_lr=config.lr, min_lr=config.lr / 20,
            warmup_steps=min(config.warmup_steps, config.max_steps),
            total_steps=config.max_steps,
        ),
        loss_at=lambda step: loss_fn, grad_clip=1.0,
        autocast=lambda: _autocast(bf16), after_step=after_step, progress=False,
    )  # fmt: skip
    if log:
        log.close()
    return model.eval(), src_tok, vocab, history


@torch.no_grad()
def char_cross_entropy(model, src_tok, vocab, pairs, batch_size: int = 128) -> float:
    """Teacher-forced cross-entropy in nats per Chinese *character* (``<eos>``
    counted as one): comparable between a character and a BPE target vocabulary,
    whose per-token losses are not."""
    model.eval()
    total, chars = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        chunk = [(p.en, p.zh) for p in pairs[i : i + batch_size]]
        src, lengths, tgt = encode_batch(chunk, src_tok, vocab, model.context_length)
        n_tokens = int((tgt[:, 1:] != vocab.pad_id).sum())
        total += float(mt_loss(model, src, lengths, tgt, vocab.pad_id)) * n_tokens
        chars += sum(len(zh) + 1 for _, zh in chunk)
    return total / chars


def save_mt(model, src_tok: SourceTokenizer, vocab, config: MTConfig,
            directory: str | Path, metadata: dict | None = None) -> Path:  # fmt: skip
    """``config.json`` (config, the character vocabulary, metadata),
    ``source_tokenizer.json`` (and ``target_tokenizer.json`` for a Chinese BPE) and
    ``model.safetensors`` in float16 (the tied output matrix stored once)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half().contiguous()
             for k, v in model.state_dict().items() if k != "out.weight"}  # fmt: skip
    save_file(state, str(directory / "model.safetensors"))
    src_tok.save(directory / "source_tokenizer.json")
    meta = {
        "architecture": "EncoderDecoder",
        "config": asdict(config),
        **(metadata or {}),
    }
    if isinstance(vocab, CharVocab):
        meta["target_chars"] = vocab.itos[4:]
    else:
        vocab.tok.save(str(directory / "target_tokenizer.json"))
    text = json.dumps(meta, ensure_ascii=False, indent=1)
    (directory / "config.json").write_text(text, encoding="utf-8")
    return directory


def _directory(name_or_path: str | Path) -> Path:
    directory = Path(name_or_path)
    return directory if directory.is_dir() else WEIGHTS_DIR / str(name_or_path)


def read_meta(name_or_path: str | Path) -> dict:
    """A saved model's ``config.json``, as stored."""
    path = _directory(name_or_path) / "config.json"
    return json.loads(path.read_text(encoding="utf-8"))


def save_meta(name_or_path: str | Path, meta: dict) -> None:
    """Rewrite a saved model's ``config.json`` (e.g. with its test scores added)."""
    text = json.dumps(meta, ensure_ascii=False, indent=1)
    (_directory(name_or_path) / "config.json").write_text(text, encoding="utf-8")


def load_mt(name_or_path: str | Path = "course-mt", device: str | torch.device = "cpu"):
    """The model saved by :func:`save_mt` (shipped: ``"course-mt"``), in float32 and
    eval mode, with its two tokenisers and its ``config.json``:
    ``(model, src_tok, vocab, meta)``."""
    directory = _directory(name_or_path)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"{directory} has no config.json; train one with "
            "`python -m llmbook.translate --out DIR`"
        )
    meta = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config = MTConfig(**meta["config"])
    meta["path"] = str(directory)  # not stored: where it was loaded from
    if "target_chars" in meta:
        vocab = CharVocab(meta["target_chars"])
    else:
        vocab = ZhBPE(Tokenizer.from_file(str(directory / "target_tokenizer.json")))
    src_tok = SourceTokenizer.from_file(directory / "source_tokenizer.json")
    model = build_model(config, src_tok.vocab_size, len(vocab))
    state = {
        k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()
    }
    state["out.weight"] = state["tgt_emb.weight"]
    model.load_state_dict(state)
    return model.to(device).eval(), src_tok, vocab, meta
