"""Command line: pretrain the course's masked-LM encoder and save it.

::

    python -m llmbook.pretrain_mlm --out runs/course-mlm --threads 1

trains :class:`~llmbook.train.MLMConfig`'s encoder (BERT's architecture, 4 layers of
width 128) with BERT's masked-LM loss on the course corpus, scores it on the
validation documents under a fixed masking against the unigram baseline, and saves it
with its results and the course tokenizer plus ``<|mask|>``. The model that ships as
``llmbook/weights/course-mlm/`` was made by this command (the step count is in its
``config.json``); load it with ``llmbook.model.from_pretrained("course-mlm")``.

Fifteen minutes of one CPU thread (900 steps of 2,048 tokens) leave a BERT only just
past the unigram stage: masked-token accuracy 0.048 against the unigram baseline's
0.031, still rising at the end (0.040, 0.044, 0.048 at steps 300, 600, 900). An MLM
learns from the 15 % of tokens it masks, a GPT from every token, so it needs many
more steps; give it more with ``--steps``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmbook.data import course_data
from llmbook.model import MaskedLM, save_pretrained
from llmbook.train import (
    MLMConfig,
    evaluate_mlm,
    mlm_tokenizer,
    most_frequent_tokens,
    train_mlm,
)
from llmbook.utils import get_device, seed_everything

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m llmbook.pretrain_mlm --out DIR``: train the course masked LM,
    evaluate it and save it with its results."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.pretrain_mlm", description=main.__doc__
    )
    parser.add_argument("--out", required=True, help="directory for the model")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    config = MLMConfig()
    if args.steps is not None:
        config = config.replace(
            max_steps=args.steps, warmup_steps=min(config.warmup_steps, args.steps)
        )
    device = get_device(args.device)
    seed_everything(config.seed)
    tokenizer_size = config.model.vocab_size - 1  # the course tokenizer's
    data = course_data(tokenizer_size, config.corpus)
    model = MaskedLM(config.model)
    history = train_mlm(model, data, config, device=device, progress=not args.quiet)
    model.cpu()
    frequent = most_frequent_tokens(
        data.train_stream, tokenizer_size, exclude=[data.eos_id]
    )
    scores = evaluate_mlm(model, data.val_docs, eos_id=data.eos_id,
                          mask_id=config.mask_id, frequent=frequent)  # fmt: skip
    results = {
        "mlm_config": config.to_dict(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": config.max_steps,
        "train_tokens_seen": history.tokens,
        "train_seconds": round(history.seconds, 1),
        "tokens_per_second": round(history.tokens_per_second, 1),
        "val_accuracy": scores["accuracy"],
        "val_top5_accuracy": scores["top5_accuracy"],
        "val_perplexity": scores["perplexity"],
        "val_masked_tokens": scores["masked_tokens"],
        "unigram_accuracy": scores["unigram_accuracy"],
        "unigram_top5_accuracy": scores["unigram_top5_accuracy"],
        "evaluation": "evaluate_mlm(seed=0, mask_prob=0.15) on the validation docs",
        "history": {
            "eval_step": history.eval_step,
            "val_perplexity": history.val_perplexity,
        },
    }
    out = Path(args.out)
    tokenizer = mlm_tokenizer(tokenizer_size, config.corpus)
    save_pretrained(model, out, {"results": results}, tokenizer=tokenizer)
    print(
        f"course-mlm: {results['parameters']:,} parameters, {history.tokens:,} tokens "
        f"in {history.seconds:.0f} s ({history.tokens_per_second:,.0f} tokens/s); "
        f"masked-token accuracy {scores['accuracy']:.3f} (top-5 "
        f"{scores['top5_accuracy']:.3f}, perplexity {scores['perplexity']:.2f}), "
        f"unigram baseline {scores['unigram_accuracy']:.3f}; saved to {out}"
    )
    return results


if __name__ == "__main__":
    main()
