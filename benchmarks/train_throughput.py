"""Training throughput and model FLOP utilisation (MFU) of the course presets.

    python benchmarks/train_throughput.py                  # the cpu preset (+ gpu on CUDA)
    python benchmarks/train_throughput.py --presets cpu gpu --compile --steps 50

For each preset it times full training steps (forward, backward, gradient clipping,
AdamW step) on the preset's model and batch, with random token batches, after
``--warmup`` untimed steps. Achieved model FLOP/s is
``model_flops_per_token(config) * tokens/s`` (matmul FLOPs only, PaLM's accounting);
the peak is *measured* on this machine as the best rate of large square matmuls in
the dtype training computes in (fp32 on the CPU, bf16 under autocast on a recent
GPU); MFU is their ratio. On CUDA the fp32 peak is listed too.

Not part of the package: nothing imports it except tests/test_benchmarks.py.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from llmbook.pretrain import PRESETS, lm_loss, make_optimizer, model_flops_per_token
from llmbook.transformer import GPT
from llmbook.utils import autocast_dtype

COLUMNS = [
    "preset",
    "device",
    "dtype",
    "parameters",
    "tokens/s",
    "model GFLOP/s",
    "peak GFLOP/s",
    "fp32 peak GFLOP/s",
    "MFU",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_flops(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    sizes: Sequence[int] = (1024, 2048, 4096),
    repeats: int = 2,
) -> float:
    """Best measured FLOP/s of an (n x n) @ (n x n) matmul over ``sizes``.

    Each size is run once untimed, then ``repeats`` times; one matmul counts
    ``2 * n**3`` FLOPs.
    """
    device = torch.device(device)
    best = 0.0
    generator = torch.Generator(device=device).manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        inner = 1 if device.type == "cpu" else 20  # GPU matmuls take microseconds
        torch.matmul(a, b)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.matmul(a, b)
            _sync(device)
            seconds = time.perf_counter() - t0
            best = max(best, inner * 2 * n**3 / seconds)
    return best


def training_throughput(
    preset: str,
    device: torch.device | str,
    steps: int = 10,
    warmup: int = 2,
    compile: bool = False,
) -> dict[str, Any]:
    """Tokens per second of full training steps of ``PRESETS[preset]``.

    Returns ``{"parameters", "tokens_per_second", "flops_per_token", "dtype",
    "seconds"}``; the timed part excludes the ``warmup`` steps (and compilation).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    device = torch.device(device)
    config = PRESETS[preset]
    model_config = config.model_config()
    torch.manual_seed(0)
    model = GPT(model_config).to(device).train()
    optimizer = make_optimizer(model, config)
    forward = torch.compile(model) if compile else model
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    shape = (config.batch_size * config.grad_accum, config.context_length + 1)
    batches = [
        torch.randint(0, config.vocab_size, shape, device=device) for _ in range(4)
    ]  # (batch, L + 1) random token ids: speed does not depend on the values

    def step(i: int) -> None:
        amp = (
            torch.autocast(device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with amp:
            loss = lm_loss(forward, batches[i % len(batches)])
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = steps * config.tokens_per_step
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_second": tokens / seconds,
        "flops_per_token": model_flops_per_token(model_config),
        "dtype": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "seconds": seconds,
    }


def benchmark(
    presets: Sequence[str],
    device: torch.device | str,
    steps: int = 10,
    warmup: int = 2,
    compile: bool = False,
    peak_sizes: Sequence[int] = (1024, 2048, 4096),
) -> list[dict[str, Any]]:
    """One row (a dict keyed by :data:`COLUMNS`) per preset."""
    device = torch.device(device)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown presets {unknown}; choose from {sorted(PRESETS)}")
    fp32_peak = peak_matmul_flops(device, torch.float32, peak_sizes)
    dtype = autocast_dtype(device)
    peak = fp32_peak if dtype is None else peak_matmul_flops(device, dtype, peak_sizes)
    rows = []
    for preset in presets:
        run = training_throughput(preset, device, steps, warmup, compile)
        achieved = run["flops_per_token"] * run["tokens_per_second"]
        rows.append(
            {
                "preset": preset,
                "device": _device_name(device),
                "dtype": run["dtype"],
                "parameters": run["parameters"],
                "tokens/s": run["tokens_per_second"],
                "model GFLOP/s": achieved / 1e9,
                "peak GFLOP/s": peak / 1e9,
                "fp32 peak GFLOP/s": fp32_peak / 1e9,
                "MFU": achieved / peak,
            }
        )
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n > 1 else ''})"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table with :data:`COLUMNS`."""

    def cell(key: str, value: Any) -> str:
        if key == "MFU":
            return f"{100 * value:.1f}%"
        if key == "parameters":
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.1f}"
        return str(value)

    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(k, row[k]) for k in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=None,
                        help="default: cpu, plus gpu when CUDA is available")  # fmt: skip
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: best)")
    parser.add_argument("--compile", action="store_true", help="torch.compile")
    parser.add_argument("--peak-sizes", type=int, nargs="+", default=[1024, 2048, 4096],
                        help="square matmul sizes for the peak")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    presets = args.presets or (["cpu", "gpu"] if device.type == "cuda" else ["cpu"])
    rows = benchmark(presets, device, args.steps, args.warmup, args.compile,
                     args.peak_sizes)  # fmt: skip
    print(f"torch {torch.__version__}; {args.steps} timed steps after {args.warmup} "
          f"warmup; compile={args.compile}\n")  # fmt: skip
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
