"""Command line: train the course's GPT from a preset and save it.

::

    python -m llmbook.pretrain --preset cpu --out runs/course-gpt

trains the course's GPT. On a CPU with bf16 units (``avx512_bf16`` or ``amx_bf16``,
detected at run time) the forward pass runs under bf16 autocast by default, which
makes a step about 1.2x faster with the same loss curve (see
``benchmarks/train_throughput.py``); ``--fp32`` turns that off. The result that ships
with the package, in ``llmbook/weights/course-gpt/``, was made by that command
before bf16 became the default, i.e. with ``--fp32``; that flag reproduces it. Load
it with ``llmbook.model.from_pretrained("course-gpt")``.

The pieces live in :mod:`llmbook.train` (config, step, loop, checkpoints) and
:mod:`llmbook.model` (the GPT, saving and loading).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmbook.data import (
    NGRAM_BASELINE,
    course_data,
    course_tokenizer,
    ngram_baseline_perplexity,
)
from llmbook.model import (
    GPT,
    from_pretrained,
    pretrained_metadata,
    save_pretrained,
)
from llmbook.model.pretrained import saved_tokenizer
from llmbook.train import PRESETS, evaluate_perplexity, train, train_dtype
from llmbook.train.command import training_parser
from llmbook.utils import get_device, seed_everything

__all__ = ["evaluate", "main"]


def evaluate(name_or_path: str | Path = "course-gpt") -> dict[str, Any]:
    """Recompute a saved model's held-out perplexity and the n-gram baseline's.

    Both score the same tokens: the validation split of the course corpus, encoded
    with the tokenizer saved beside the model (which must be the course tokenizer
    the baseline uses), one end-of-document prediction per document. Prints
    ``NAME perplexity P, n-gram baseline B, N held-out tokens`` as its last line.
    """
    model = from_pretrained(name_or_path)
    meta = pretrained_metadata(name_or_path)
    corpus = meta.get("results", {}).get("train_config", {}).get("corpus", "python")
    saved = saved_tokenizer(name_or_path)  # checked: the one the model was saved with
    course = course_tokenizer(model.config.vocab_size, corpus)
    if saved.to_str() != course.to_str():
        raise ValueError(
            f"{name_or_path}'s tokenizer is not the course tokenizer of corpus "
            f"{corpus!r}: its perplexity and the n-gram baseline's would count "
            "different tokens"
        )
    data = course_data(model.config.vocab_size, corpus)
    perplexity = evaluate_perplexity(model, data.val_docs, data.eos_id)
    baseline = ngram_baseline_perplexity({**NGRAM_BASELINE, "corpus": corpus})
    n = data.val_predictions
    name = Path(name_or_path).name if Path(name_or_path).is_dir() else name_or_path
    print(f"{name} perplexity {perplexity:.2f}, n-gram baseline {baseline:.2f}, "
          f"{n} held-out tokens")  # fmt: skip
    return {"perplexity": perplexity, "baseline": baseline, "tokens": n,
            "ratio": perplexity / baseline}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m llmbook.pretrain``: train a preset and save it with its results
    (``--out DIR``), or evaluate a saved model against the n-gram baseline
    (``--evaluate NAME_OR_DIR``)."""
    parser = training_parser(
        "python -m llmbook.pretrain", main.__doc__,
        evaluates="its held-out perplexity and the n-gram baseline's",
    )  # fmt: skip
    causal = sorted(name for name, c in PRESETS.items() if c.objective == "causal")
    parser.add_argument("--preset", choices=causal, default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        return evaluate(args.evaluate)
    config = PRESETS[args.preset].replace()
    if args.steps is not None:
        config = config.replace(
            max_steps=args.steps, warmup_steps=min(config.warmup_steps, args.steps)
        )
    if args.no_compile:
        config.compile = False
    device = get_device(args.device)
    if device.type == "cpu":
        config.compile = False  # compiling costs more than it saves in a 5-minute run
    seed_everything(config.seed)
    out = Path(args.out)
    data = course_data(config.model.vocab_size, config.corpus)
    model = GPT(config.model)
    history = train(
        model,
        data,
        config,
        device=device,
        checkpoint_path=out / "checkpoint.pt",
        resume=args.resume,
        progress=not args.quiet,
        cpu_bf16=not args.fp32,
    )
    model.cpu()
    val_ppl = evaluate_perplexity(model, data.val_docs, data.eos_id)
    results = {
        "preset": args.preset,
        "train_config": config.to_dict(),
        "device": str(device),
        "autocast": str(train_dtype(device, not args.fp32) or "fp32").removeprefix(
            "torch."
        ),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens_seen": history.tokens,
        "train_seconds": round(history.seconds, 1),
        "tokens_per_second": round(history.tokens_per_second, 1),
        "val_perplexity": val_ppl,
        "ngram_baseline_perplexity": NGRAM_BASELINE["perplexity"],
        "history": {
            "eval_step": history.eval_step,
            "val_perplexity": history.val_perplexity,
        },
    }
    tokenizer = course_tokenizer(config.model.vocab_size, config.corpus)
    save_pretrained(model, out, {"results": results}, tokenizer=tokenizer)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    print(
        f"{args.preset}: {results['parameters']:,} parameters, "
        f"{history.tokens:,} tokens in {history.seconds:.0f} s "
        f"({history.tokens_per_second:,.0f} tokens/s); validation perplexity "
        f"{val_ppl:.2f} (n-gram baseline {NGRAM_BASELINE['perplexity']:.2f}); "
        f"saved to {out}"
    )
    return results


if __name__ == "__main__":
    main()
