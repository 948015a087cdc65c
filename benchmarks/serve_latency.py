"""Latency and throughput of the course GPT behind its HTTP service
(``llmbook.deploy.server``), fp32 against int8, at several client concurrencies.

For each model variant the service starts on a free localhost port (uvicorn in a
background thread), gets one warm-up request, then ``--requests`` requests at each
``--concurrency`` (threads, one HTTP connection per request), and stops. Every
request streams ``--new-tokens`` greedy tokens for a prompt taken from the course's
validation split. Variants: ``fp32`` (the shipped weights), ``int8`` (PyTorch's
``torch.ao`` dynamic int8 on every ``nn.Linear``) and ``int8-ours`` (our
``QuantizedLinear`` w8a8, integer matmul in plain PyTorch). Usage::

    python benchmarks/serve_latency.py [--requests 200] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from llmbook.data import course_splits
from llmbook.deploy import Server, create_app, load_test, quantize_model
from llmbook.model import from_pretrained, load_tokenizer

COLUMNS = ["model", "concurrency", "requests", "p50 ms", "p95 ms",
           "first token p50 ms", "tokens/s"]  # fmt: skip
VARIANTS = ("fp32", "int8", "int8-ours")


def make_variant(model: nn.Module, name: str) -> nn.Module:
    if name == "fp32":
        return model
    if name == "int8-ours":
        return quantize_model(copy.deepcopy(model), "w8a8")
    if name == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, torch.qint8)
    raise ValueError(f"unknown variant {name!r}: choose from {VARIANTS}")


def prompts(n: int, tokenizer, max_tokens: int = 24) -> list[str]:
    """``n`` prompts: the first words of validation documents (at most
    ``max_tokens`` tokens each), cycled."""
    docs = [d for d in course_splits().val if d.strip()][:50]
    out = []
    for doc in docs:
        ids = tokenizer.encode(doc)[:max_tokens]
        out.append(tokenizer.decode(ids))
    return [out[i % len(out)] for i in range(n)]


def benchmark(
    variants: Sequence[str] = ("fp32", "int8"),
    concurrency: Sequence[int] = (1, 4, 16),
    requests: int = 200,
    new_tokens: int = 16,
) -> list[dict]:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: choose from {VARIANTS}")
    if requests < 1:
        raise ValueError(f"requests must be >= 1, got {requests}")
    base = from_pretrained("course-gpt").eval()
    tokenizer = load_tokenizer("course-gpt")
    texts = prompts(requests, tokenizer)
    payloads = [{"prompt": t, "max_new_tokens": new_tokens} for t in texts]
    rows = []
    for name in variants:
        app = create_app(make_variant(base, name), tokenizer, max_new_tokens=new_tokens)
        with Server(app) as server:
            load_test(server.url, payloads[:1], 1)  # warm-up
            for c in concurrency:
                stats = load_test(server.url, payloads, c)
                rows.append({"model": name, "concurrency": c, **stats})
    return rows


def print_table(rows: list[dict]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in rows:
        cells = [
            r["model"], str(r["concurrency"]), str(r["requests"] - r["failed"]),
            f"{1000 * r['p50_s']:.0f}", f"{1000 * r['p95_s']:.0f}",
            f"{1000 * r['p50_first_token_s']:.0f}", f"{r['tokens_per_s']:.0f}",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = benchmark(args.variants, args.concurrency, args.requests, args.new_tokens)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{args.requests} requests per row, {args.new_tokens} greedy tokens each")  # fmt: skip
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
