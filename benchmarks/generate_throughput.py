"""New tokens per second: our generation (with and without the KV cache) against
``transformers``' ``generate`` on the same model, side by side in one run.

The model is the shipped course GPT (or ``--model DIR``) and, for Hugging Face, the
same weights as a ``GPT2LMHeadModel`` (``llmbook.model.to_hf_gpt2``). All rows decode
greedily from the same random prompts, so they produce the same tokens (checked);
each row is the best of ``--repeats`` timed runs after one warm-up run. The last
column is the row's speed over Hugging Face's at the same batch size. Usage::

    python benchmarks/generate_throughput.py [--batch 1 8] [--new-tokens 100]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch

from llmbook.decoding import generate
from llmbook.model import from_pretrained, to_hf_gpt2
from llmbook.utils import get_device

COLUMNS = ["device", "batch", "method", "new tokens/s", "ms/token", "vs HF generate"]


def best_time(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device):
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), out


def benchmark(
    model_name: str = "course-gpt",
    batches: Sequence[int] = (1, 8),
    prompt_len: int = 16,
    new_tokens: int = 100,
    repeats: int = 3,
    device: str | None = None,
) -> list[dict]:
    dev = get_device(device)
    model = from_pretrained(model_name).to(dev).eval()
    if prompt_len + new_tokens > model.config.context_length:
        raise ValueError(
            f"prompt_len + new_tokens = {prompt_len + new_tokens} exceeds the model's "
            f"context_length {model.config.context_length}"
        )
    hf_model = to_hf_gpt2(model).to(dev).eval()
    for config in (hf_model.config, hf_model.generation_config):
        config.eos_token_id = None  # decode exactly new_tokens tokens on both sides
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in batches:
        ids = torch.randint(model.config.vocab_size, (batch, prompt_len), generator=gen)
        ids = ids.to(dev)
        methods = {
            "ours, no cache": lambda ids=ids: generate(
                model, ids, new_tokens, temperature=0, use_cache=False
            ),
            "ours, KV cache": lambda ids=ids: generate(
                model, ids, new_tokens, temperature=0, use_cache=True
            ),
            "HF generate": lambda ids=ids: hf_model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
            ),  # fmt: skip
        }
        timed = {}
        with torch.inference_mode():
            for name, fn in methods.items():
                timed[name] = best_time(fn, repeats, dev)
        outputs = [out for _, out in timed.values()]
        same = all(torch.equal(outputs[0], o) for o in outputs[1:])
        hf_rate = batch * new_tokens / timed["HF generate"][0]
        for name, (seconds, _) in timed.items():
            rate = batch * new_tokens / seconds
            rows.append({
                "device": dev.type, "batch": batch, "method": name,
                "new tokens/s": rate, "ms/token": 1000 * seconds / new_tokens,
                "vs HF generate": rate / hf_rate, "same tokens": same,
            })  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        cells = [
            row["device"], str(row["batch"]), row["method"],
            f"{row['new tokens/s']:,.0f}", f"{row['ms/token']:.2f}",
            f"{row['vs HF generate']:.2f}x",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    if not all(row["same tokens"] for row in rows):
        print("WARNING: the methods produced different tokens")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="course-gpt")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: best)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = benchmark(args.model, args.batch, args.prompt_len, args.new_tokens,
                     args.repeats, args.device)  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"greedy, prompt {args.prompt_len} tokens, {args.new_tokens} new tokens")  # fmt: skip
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
