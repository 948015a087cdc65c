"""Command line: train (``--out DIR``) or score (``--evaluate NAME``) a translator.

python -m llmbook.translate --out DIR --steps 9000 --threads 2
python -m llmbook.translate --evaluate course-mt [--decode greedy|beam]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import fields

import torch

from llmbook.train.step import cpu_has_bf16
from llmbook.translate.model import MTConfig
from llmbook.translate.scoring import (
    evaluate_mt,
    sample_sources,
    verdict_line,
    verdict_pairs,
)
from llmbook.translate.training import (
    char_cross_entropy,
    load_mt,
    read_meta,
    save_meta,
    save_mt,
    train_mt,
)


def evaluate(name: str, decode: str, max_sources: int | None, split: str = "test",
             record: str | None = None) -> dict:  # fmt: skip
    model, src_tok, vocab, meta = load_mt(name)
    pairs = sample_sources(verdict_pairs(split), max_sources)
    t0 = time.time()
    nats = char_cross_entropy(model, src_tok, vocab, pairs)
    print(f"cross-entropy {nats:.3f} nats per Chinese character ({len(vocab):,} "
          f"target tokens)")  # fmt: skip
    result = evaluate_mt(model, src_tok, vocab, pairs, decode=decode)
    diff, low, high = result["model_minus_dictionary"]
    print(f"per catalog (chrF): {json.dumps(result['per_catalog'])}")
    memory = result["scores"]["memory"]
    print(f"translation memory (lookup in all training pairs) chrF "
          f"{memory['chrF']:.2f}, BLEU {memory['BLEU']:.2f}")  # fmt: skip
    print(f"model minus dictionary chrF {diff:.2f}, 95% paired bootstrap interval "
          f"[{low:.2f}, {high:.2f}]")  # fmt: skip
    print(f"decoding: {decode}, sentence-level {split} sources of the catalogs "
          f"({time.time() - t0:.0f} s)")  # fmt: skip
    print(verdict_line(result, os.path.basename(os.path.normpath(name))), flush=True)
    if record:  # the summary goes into the model's config.json under this key
        meta = read_meta(name)  # as stored now (another evaluation may have written)
        scores = result["scores"]
        meta[record] = {"n": result["n"], "decode": decode, "split": split,
                        "nats_per_char": round(nats, 3), "target_vocab": len(vocab),
                        "chrF": round(scores["model"]["chrF"], 2),
                        "BLEU": round(scores["model"]["BLEU"], 2),
                        "copy": round(scores["copy"]["chrF"], 2),
                        "dictionary": round(scores["dictionary"]["chrF"], 2),
                        "memory": round(scores["memory"]["chrF"], 2),
                        "model_minus_dictionary": [round(x, 2) for x in (diff, low, high)],
                        "per_catalog": result["per_catalog"]}  # fmt: skip
        save_meta(name, meta)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train or score the en->zh model.")
    parser.add_argument("--evaluate", metavar="NAME", help="score a saved model")
    parser.add_argument("--decode", choices=("greedy", "beam"), default="greedy")
    parser.add_argument("--max-sources", type=int, default=None,
                        help="score every k-th test source, at most this many")  # fmt: skip
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--record", metavar="KEY",
                        help="store the scores in the model's config.json under KEY")  # fmt: skip
    parser.add_argument("--out", help="train and save here")
    parser.add_argument("--steps", type=int, default=MTConfig.max_steps)
    parser.add_argument("--target", choices=("chars", "bpe"), default="chars")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--log", help="append the loss curve here (JSON lines)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        evaluate(args.evaluate, args.decode, args.max_sources, args.split, args.record)
        return
    if not args.out:
        parser.error("give --out DIR (train) or --evaluate NAME (score)")
    config = MTConfig(max_steps=args.steps, target=args.target, seed=args.seed)
    t0 = time.time()
    model, src_tok, vocab, history = train_mt(config, args.log, checkpoint=args.out)
    meta = {"history": history, "train_seconds": round(time.time() - t0),
            "threads": torch.get_num_threads(), "bf16_autocast": cpu_has_bf16(),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
            "n_params": sum(p.numel() for p in model.parameters()),
            "command": "python -m llmbook.translate " + " ".join(sys.argv[1:] if argv
                                                                 is None else argv),
            "config_fields": [f.name for f in fields(MTConfig)]}  # fmt: skip
    save_mt(model, src_tok, vocab, config, args.out, meta)
    print(f"saved {args.out}: {meta['n_params']:,} parameters, "
          f"{meta['train_seconds']} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
