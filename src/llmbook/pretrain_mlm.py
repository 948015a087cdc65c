"""Command line: pretrain the course's masked-LM encoder, save it, evaluate it.

::

    python -m llmbook.pretrain_mlm --out runs/course-mlm
    python -m llmbook.pretrain_mlm --evaluate course-mlm

trains ``PRESETS["mlm"]``, BERT's architecture (4 layers of width 128, windows of 32
tokens) with BERT's masked-LM loss at a 40 % masking rate (the preset's note says why),
in the course's one training loop (:func:`llmbook.train.train` with
``objective="masked"``; bf16 autocast on a CPU with bf16 units, as
``python -m llmbook.pretrain``), and saves it with its results and the course
tokenizer plus ``<|mask|>``. The model that ships as ``llmbook/weights/course-mlm/``
was made by this command (its recipe, time and scores are in its ``config.json``);
load it with ``llmbook.model.from_pretrained("course-mlm")``.

Both modes end with the line ``NAME masked-token top-1 A, top-5 A5, unigram top-1 U,
N masked tokens``: the model's accuracy at the masked positions of the validation
documents under one fixed masking (:func:`llmbook.train.evaluate_mlm`), and the
unigram baseline's (always the training split's most frequent token).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmbook.data import CourseData, course_data
from llmbook.model import MaskedLM, from_pretrained, save_pretrained
from llmbook.train import (
    PRESETS,
    evaluate_mlm,
    mlm_tokenizer,
    most_frequent_tokens,
    train,
    train_dtype,
)
from llmbook.train.command import training_parser
from llmbook.utils import get_device, seed_everything

__all__ = ["evaluate", "main"]


def report(name: str, scores: dict[str, Any]) -> None:
    """Print the evaluation line both modes end with."""
    print(f"{name} masked-token top-1 {scores['accuracy']:.3f}, top-5 "
          f"{scores['top5_accuracy']:.3f}, unigram top-1 "
          f"{scores['unigram_accuracy']:.3f}, {scores['masked_tokens']} masked "
          "tokens")  # fmt: skip


def score(model: MaskedLM, data: CourseData) -> dict[str, Any]:
    """:func:`~llmbook.train.evaluate_mlm` on the validation documents (the mask is
    the model's last id), with the unigram baseline from the training split."""
    mask_id = model.config.vocab_size - 1
    frequent = most_frequent_tokens(data.train_stream, mask_id, exclude=[data.eos_id])
    return evaluate_mlm(model, data.val_docs, eos_id=data.eos_id, mask_id=mask_id,
                        frequent=frequent)  # fmt: skip


def evaluate(name_or_path: str | Path = "course-mlm") -> dict[str, Any]:
    """Score a saved masked LM on the validation documents against the unigram
    baseline; prints ``NAME masked-token top-1 A, top-5 A5, unigram top-1 U, N
    masked tokens`` as its last line and returns those numbers."""
    model = from_pretrained(name_or_path)
    if not isinstance(model, MaskedLM):
        raise ValueError(f"{name_or_path} is a {type(model).__name__}, not a masked LM")
    size = model.config.vocab_size - 1  # the course tokenizer's, without the mask
    scores = score(model, course_data(size, PRESETS["mlm"].corpus))
    name = Path(name_or_path).name if Path(name_or_path).is_dir() else name_or_path
    report(name, scores)
    return scores


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m llmbook.pretrain_mlm``: train the course masked LM and save it
    with its results (``--out DIR``), or score a saved one (``--evaluate``)."""
    parser = training_parser(
        "python -m llmbook.pretrain_mlm", main.__doc__,
        evaluates="its masked-token accuracy and the unigram baseline's",
    )  # fmt: skip
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        return evaluate(args.evaluate)
    config = PRESETS["mlm"].replace()
    if args.steps is not None:
        config = config.replace(
            max_steps=args.steps, warmup_steps=min(config.warmup_steps, args.steps)
        )
    device = get_device(args.device)
    seed_everything(config.seed)
    out = Path(args.out)
    size = config.mask_id  # the course tokenizer's size; the mask token comes last
    data = course_data(size, config.corpus)
    model = MaskedLM(config.model)
    history = train(model, data, config, device=device,
                    checkpoint_path=out / "checkpoint.pt", resume=args.resume,
                    progress=not args.quiet, cpu_bf16=not args.fp32)  # fmt: skip
    model.cpu()
    scores = score(model, data)
    results = {
        "train_config": config.to_dict(),
        "device": str(device),
        "autocast": str(train_dtype(device, not args.fp32) or "fp32").removeprefix(
            "torch."
        ),
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
    tokenizer = mlm_tokenizer(size, config.corpus)
    save_pretrained(model, out, {"results": results}, tokenizer=tokenizer)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    print(f"course-mlm: {results['parameters']:,} parameters, {history.tokens:,} "
          f"tokens in {history.seconds:.0f} s ({history.tokens_per_second:,.0f} "
          f"tokens/s); saved to {out}")  # fmt: skip
    report(out.name, scores)
    return results


if __name__ == "__main__":
    main()
