"""Supervised instruction tuning with LoRA (Chapter 7): how ``course-gpt-sft`` is made,
and the loop Chapter 12's reader reuses.

An example is a prompt and its answer; the loss is the causal LM loss on the answer
tokens only (the prompt is context, not something to learn to write). :func:`lora_tune`
puts LoRA adapters on a model, trains them on random batches of examples with a cosine
schedule through :func:`~llmbook.train.run_steps`, and merges them back, so the result
is a plain GPT. Command::

    python -m llmbook.finetune.sft --out DIR     tune course-gpt into course-gpt-sft

The recipe (:class:`SFTConfig`) is Chapter 7 Section 4.3's LoRA run: rank 8 on every
linear layer, 100 steps of 8 training pairs at learning rate 3e-3, questions and
answers cut to 48 tokens.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from llmbook.data import course_splits, instruction_pairs
from llmbook.finetune.lora import apply_lora, merge_and_unwrap
from llmbook.model.pretrained import (
    from_pretrained,
    load_tokenizer,
    save_pretrained,
    saved_tokenizer,
)
from llmbook.train.loop import evaluate_perplexity
from llmbook.train.objectives import IGNORE_INDEX, causal_lm_loss
from llmbook.train.schedule import cosine_schedule
from llmbook.train.step import run_steps

__all__ = [
    "SFT_MODEL",
    "SFTConfig",
    "question",
    "answer_batch",
    "answer_loss",
    "lora_tune",
    "train_sft",
    "main",
]

#: the shipped instruction-tuned model (``python -m llmbook.finetune.sft``)
SFT_MODEL = "course-gpt-sft"
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class SFTConfig:
    """A LoRA instruction-tuning run: adapters, schedule, batches, and how long an
    example may be (``max_tokens``: prompt, answer and end-of-text token)."""

    steps: int = 100
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 0
    weight_decay: float = 0.0
    r: int = 8
    alpha: float = 16
    targets: tuple[str, ...] = LINEAR_LAYERS
    max_tokens: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {self.max_tokens}")


def question(name: str) -> str:
    """Chapter 7's question about a definition, with its closing line break."""
    return f"What does `{name}` do?\n"


def answer_batch(
    examples: Sequence[tuple[str, str]],
    encode: Callable[[str], list[int]],
    eos_id: int,
    max_tokens: int,
) -> Tensor:
    """(batch, 2, L): token ids in row 0, training labels in row 1: the ids of the
    answer (cut so prompt + answer + end-of-text fit ``max_tokens``) and its end-of-text
    token, :data:`~llmbook.train.objectives.IGNORE_INDEX` on the prompt and on the
    right padding (the ids are padded with end-of-text)."""
    rows = []
    for prompt, ref in examples:
        p = encode(prompt)
        if len(p) >= max_tokens:
            raise ValueError(
                f"a prompt of {len(p)} tokens leaves no room for its answer in "
                f"max_tokens={max_tokens}"
            )
        a = encode(ref)[: max_tokens - 1 - len(p)] + [eos_id]
        rows.append((p + a, [IGNORE_INDEX] * len(p) + a))
    length = max(len(ids) for ids, _ in rows)
    batch = torch.full((len(rows), 2, length), IGNORE_INDEX)
    batch[:, 0] = eos_id
    for r, (ids, labels) in enumerate(rows):
        batch[r, 0, : len(ids)] = torch.tensor(ids)
        batch[r, 1, : len(labels)] = torch.tensor(labels)
    return batch


def answer_loss(model: nn.Module, batch: Tensor) -> Tensor:
    """Chapter 7's answer-only loss, for a batch made by :func:`answer_batch`: the
    causal LM loss (:func:`~llmbook.train.objectives.causal_lm_loss`) over the answer
    tokens of the whole batch (the hook :func:`~llmbook.train.train_step` takes as
    ``loss_fn``)."""
    ids, labels = batch[:, 0], batch[:, 1]
    return causal_lm_loss(model(ids[:, :-1]), labels[:, 1:])


def lora_tune(
    model: nn.Module,
    examples: Sequence[tuple[str, str]],
    tokenizer,
    config: SFTConfig,
    *,
    progress: bool = True,
    desc: str = "sft",
) -> tuple[nn.Module, list[float], float]:
    """Tune `model` on (prompt, answer) `examples` with LoRA and merge the adapters.

    Seeds torch with ``config.seed`` (the adapters' initial values, dropout) and draws
    each batch of ``batch_size`` distinct examples from ``random.Random(seed)``.
    Returns the merged model (in eval mode), the loss of every step and the seconds
    the steps took."""
    torch.manual_seed(config.seed)
    model = apply_lora(model, config.targets, config.r, config.alpha).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    rng, examples = random.Random(config.seed), list(examples)
    length = min(config.max_tokens, model.config.context_length)
    batches = (
        answer_batch(rng.sample(examples, config.batch_size), tokenizer.encode,
                     tokenizer.eos_token_id, length)
        for _ in itertools.count()
    )  # fmt: skip
    start = time.perf_counter()
    losses = run_steps(
        model, optimizer, batches, stop=config.steps,
        lr=lambda step: cosine_schedule(
            step, max_lr=config.lr, warmup_steps=config.warmup_steps,
            total_steps=config.steps,
        ),
        loss_at=lambda step: answer_loss, progress=progress, desc=desc,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return merge_and_unwrap(model).eval(), losses, seconds


@torch.no_grad()
def held_out_answer_loss(
    model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], max_tokens: int
) -> float:
    """The answer-only loss of `model` on (name, answer) `pairs`, as one batch."""
    examples = [(question(name), ref) for name, ref in pairs]
    batch = answer_batch(examples, tokenizer.encode, tokenizer.eos_token_id, max_tokens)
    return answer_loss(model.eval(), batch).item()


def train_sft(
    out_dir: Path,
    config: SFTConfig = SFTConfig(),
    base: str | Path = "course-gpt",
    progress: bool = True,
) -> Path:
    """Tune `base` on Chapter 7's training pairs (:func:`lora_tune`) and save it with
    :func:`~llmbook.model.save_pretrained` in `out_dir`, recording the held-out answer
    loss (the first 64 held-out pairs, as Chapter 7 scores them) and the perplexity on
    the first 30 validation documents, before and after."""
    train_pairs, held_out = instruction_pairs()
    tokenizer = load_tokenizer(base)
    model = from_pretrained(base)
    docs = [tokenizer.encode(doc) for doc in course_splits().val[:30]]
    eos = tokenizer.eos_token_id
    before = (
        held_out_answer_loss(model, tokenizer, held_out[:64], config.max_tokens),
        evaluate_perplexity(model, docs, eos),
    )
    examples = [(question(name), ref) for name, ref in train_pairs]
    model, losses, seconds = lora_tune(model, examples, tokenizer, config,
                                       progress=progress)  # fmt: skip
    meta = {
        "results": {
            "made_by": "python -m llmbook.finetune.sft --out DIR",
            "base": str(base),
            "sft_config": asdict(config),
            "train_pairs": len(train_pairs),
            "train_seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "loss_first_last_10": [
                round(sum(losses[:10]) / len(losses[:10]), 4),
                round(sum(losses[-10:]) / len(losses[-10:]), 4),
            ],
            "base_held_out_answer_loss": before[0],
            "held_out_answer_loss": held_out_answer_loss(
                model, tokenizer, held_out[:64], config.max_tokens
            ),
            "base_val_perplexity_30_docs": before[1],
            "val_perplexity_30_docs": evaluate_perplexity(model, docs, eos),
        }
    }
    return save_pretrained(model, out_dir, meta, saved_tokenizer(base))


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m llmbook.finetune.sft --out DIR``: tune course-gpt into course-gpt-sft."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.finetune.sft", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument(
        "--base",
        default="course-gpt",
        help="a shipped model's name or a saved directory",
    )
    parser.add_argument("--steps", type=int, default=None, help="override steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = SFTConfig() if args.steps is None else SFTConfig(steps=args.steps)
    out = train_sft(args.out, config, base=args.base, progress=not args.quiet)
    print(json.dumps(json.loads((out / "config.json").read_text())["results"]))
    print("wrote", out)
    return out


if __name__ == "__main__":
    main()
