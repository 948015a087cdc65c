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

With ``--nanogpt PATH/model.py`` it instead times our training step, exactly as
``python -m llmbook.pretrain`` runs it by default (bf16 autocast where the CPU has
bf16 units; ``--fp32`` for fp32), against nanoGPT's model on its CPU recipe (a copy
of karpathy/nanoGPT's ``model.py`` that you keep outside this repository) at
identical configurations, alternating the two in one process for ``--rounds``
rounds, and prints tokens/s per wall-clock second and per CPU-second, their ratios,
MFU and the load average::

    python benchmarks/train_throughput.py --nanogpt /tmp/nanogpt/model.py --threads 1

On a machine shared with other work, prefer one thread and the CPU-time ratio: with
two threads and more runnable processes than cores, each step waits for its
descheduled thread and the rates swing by 3x from round to round.

Not part of the package: nothing imports it except tests/benchmarks/test_benchmarks.py.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llmbook.data import window_iterator
from llmbook.model import GPT, GPTConfig, model_flops_per_token
from llmbook.train import (
    PRESETS,
    autocast_context,
    cpu_has_bf16,
    lr_at,
    make_optimizer,
    train_dtype,
    train_step,
    update_ema,
)
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
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best measured FLOP/s of an (n x n) @ (n x n) matmul over ``sizes``.

    Each size is run once untimed, then ``repeats`` times; one matmul counts
    ``2 * n**3`` FLOPs. ``clock=time.process_time`` gives FLOPs per CPU-second
    (all threads' time), which a loaded machine disturbs far less than wall time.
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
            t0 = clock()
            for _ in range(inner):
                torch.matmul(a, b)
            _sync(device)
            seconds = clock() - t0
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
    model_config = config.model
    torch.manual_seed(0)
    model = GPT(model_config).to(device).train()
    optimizer = make_optimizer(model, config)
    forward = torch.compile(model) if compile else model
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    shape = (config.batch_size * config.grad_accum, model_config.context_length + 1)
    batches = [
        torch.randint(0, model_config.vocab_size, shape, device=device)
        for _ in range(4)
    ]  # (batch, L + 1) random token ids: speed does not depend on the values

    def step(i: int) -> None:
        # the one training step the pretraining loop and DDP also use
        train_step(forward, optimizer, [batches[i % len(batches)]],
                   grad_clip=config.grad_clip, scaler=scaler,
                   autocast=lambda: autocast_context(device))  # fmt: skip

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


#: The configurations of the nanoGPT comparison: the course's cpu preset at context
#: 64, and nanoGPT's own CPU example (README: batch 12, context 64, 4 layers, 4 heads,
#: 128 dimensions, no dropout), with a 4,096-token vocabulary.
NANOGPT_CONFIGS = {
    "cpu preset shape": dict(n_layers=4, n_heads=4, d_model=128, context_length=64,
                             batch_size=32, vocab_size=2048, dropout=0.1),
    "nanoGPT CPU example": dict(n_layers=4, n_heads=4, d_model=128, context_length=64,
                                batch_size=12, vocab_size=4096, dropout=0.0),
}  # fmt: skip


def _load_nanogpt(path: str):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    if spec is None or spec.loader is None or not Path(path).is_file():
        raise FileNotFoundError(f"cannot import nanoGPT's model.py from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (``/proc/loadavg``), or "n/a"."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def compare_nanogpt(
    path: str,
    rounds: int = 3,
    steps: int = 10,
    cpu_bf16: bool = True,
    peak_sizes: Sequence[int] = (1024, 2048),
) -> list[dict[str, Any]]:
    """Tokens/s of our training step and nanoGPT's at each of :data:`NANOGPT_CONFIGS`.

    Our side is the step exactly as ``python -m llmbook.pretrain`` runs it by default:
    the cpu preset's recipe (AdamW with the course's weight-decay groups, clipping at
    1.0, the weight average updated every step, the loss read every step), batches
    from :func:`~llmbook.data.window_iterator`, and bf16 autocast when this CPU has
    bf16 units (``cpu_bf16=False``: fp32, as ``--fp32``). nanoGPT's side is its CPU
    recipe (``--device=cpu --compile=False``: fp32, no autocast, torch's AdamW from its
    ``configure_optimizers``, clipping at 1.0) with batches sampled like its
    ``get_batch``. Both read the same random token stream. After 3 untimed steps each,
    ``rounds`` times each model runs ``steps`` steps in turn; each row has the
    per-round rates, their medians, the ratio of the medians, and MFU against the
    measured fp32 matmul peak (:func:`peak_matmul_flops`).
    """
    if rounds < 1 or steps < 1:
        raise ValueError(f"need rounds >= 1 and steps >= 1, got {rounds}, {steps}")
    nano = _load_nanogpt(path)
    peak = peak_matmul_flops("cpu", torch.float32, peak_sizes)
    cpu_peak = peak_matmul_flops("cpu", torch.float32, peak_sizes,
                                 clock=time.process_time)  # fmt: skip
    rows = []
    for name, c in NANOGPT_CONFIGS.items():
        load_before = load_average()
        rates = _race(nano, c, rounds, steps, cpu_bf16)
        med = {k: statistics.median(v) for k, v in rates.items() if k != "dtype"}
        flops = model_flops_per_token(_our_config(c))
        rows.append({
            "config": name, "ours dtype": rates["dtype"],
            "ours rounds": rates["ours"], "nanoGPT rounds": rates["nanoGPT"],
            "ours cpu rounds": rates["ours cpu"],
            "nanoGPT cpu rounds": rates["nanoGPT cpu"],
            "ours tokens/s": med["ours"], "nanoGPT tokens/s": med["nanoGPT"],
            "ratio": med["ours"] / med["nanoGPT"],
            "round ratios": [a / b for a, b in zip(rates["ours"], rates["nanoGPT"],
                                                   strict=True)],
            "ours tokens/cpu-s": med["ours cpu"],
            "nanoGPT tokens/cpu-s": med["nanoGPT cpu"],
            "cpu ratio": med["ours cpu"] / med["nanoGPT cpu"],
            "ours MFU": flops * med["ours"] / peak,
            "nanoGPT MFU": flops * med["nanoGPT"] / peak,
            "ours cpu MFU": flops * med["ours cpu"] / cpu_peak,
            "nanoGPT cpu MFU": flops * med["nanoGPT cpu"] / cpu_peak,
            "fp32 peak GFLOP/s": peak / 1e9,
            "fp32 peak GFLOP/cpu-s": cpu_peak / 1e9,
            "load": f"{load_before} -> {load_average()}",
        })  # fmt: skip
    return rows


def _our_config(c: dict[str, Any]) -> GPTConfig:
    return GPTConfig(vocab_size=c["vocab_size"], context_length=c["context_length"],
                     d_model=c["d_model"], n_heads=c["n_heads"], n_layers=c["n_layers"],
                     dropout=c["dropout"], fused_attention=True)  # fmt: skip


def _race(nano: Any, c: dict[str, Any], rounds: int, steps: int,
          cpu_bf16: bool) -> dict[str, Any]:  # fmt: skip
    """Alternate ``steps`` steps of each model ``rounds`` times; tokens/s per round."""
    stream = torch.randint(0, c["vocab_size"], (1_000_000,),
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.manual_seed(0)
    ours = GPT(_our_config(c)).train()
    cfg = PRESETS["cpu"].replace(model=ours.config, batch_size=c["batch_size"])
    opt_ours = make_optimizer(ours, cfg)
    ema = copy.deepcopy(ours).requires_grad_(False)
    batches = window_iterator(stream, c["context_length"], c["batch_size"], seed=0)

    known = set(nano.GPTConfig.__dataclass_fields__)
    extras = {k: False for k in ("use_softermax", "use_rmsnorm", "use_relu",
                                 "use_squared_relu") if k in known}  # fmt: skip
    theirs = nano.GPT(nano.GPTConfig(
        block_size=c["context_length"], vocab_size=c["vocab_size"],
        n_layer=c["n_layers"], n_head=c["n_heads"], n_embd=c["d_model"],
        dropout=c["dropout"], bias=True, **extras)).train()  # fmt: skip
    opt_theirs = theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    block, batch_size = c["context_length"], c["batch_size"]

    def our_step(i: int) -> None:
        # what llmbook.train.loop.train does per step (python -m llmbook.pretrain)
        batch = next(batches)
        loss = train_step(ours, opt_ours, [batch], lr=lr_at(i, cfg),
                          grad_clip=cfg.grad_clip,
                          autocast=lambda: autocast_context("cpu", cpu_bf16))  # fmt: skip
        loss.item()
        update_ema(ema, ours, cfg.ema_decay)

    def their_step(i: int) -> None:
        # nanoGPT's get_batch: random offsets into the token stream, stacked
        ix = torch.randint(len(stream) - block, (batch_size,))
        x = torch.stack([stream[j : j + block] for j in ix])
        y = torch.stack([stream[j + 1 : j + 1 + block] for j in ix])
        _, loss = theirs(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)

    for i in range(3):
        our_step(i)
        their_step(i)
    dtype = train_dtype("cpu", cpu_bf16)
    rates: dict[str, Any] = {"ours": [], "nanoGPT": [], "ours cpu": [],
                             "nanoGPT cpu": [],
                             "dtype": "fp32" if dtype is None else "bf16 autocast"}  # fmt: skip
    tokens = steps * batch_size * block
    for _ in range(rounds):
        for label, step in (("ours", our_step), ("nanoGPT", their_step)):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(steps):
                step(i)
            rates[label].append(tokens / (time.perf_counter() - t0))
            rates[f"{label} cpu"].append(tokens / (time.process_time() - c0))
    return rates


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


def markdown_nanogpt(rows: Sequence[dict[str, Any]]) -> str:
    """The nanoGPT comparison as a markdown table, one line per config and round.

    Rates per wall-clock second and per CPU-second (process time, all threads); on
    a machine shared with other work the CPU-second ratio is the steadier one.
    """
    lines = [
        "| config | round | ours tokens/s | nanoGPT tokens/s | ours / nanoGPT | "
        "ours tokens/CPU-s | nanoGPT tokens/CPU-s | ours / nanoGPT (CPU time) | "
        "ours MFU | nanoGPT MFU | load (1, 5, 15 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rounds = zip(r["ours rounds"], r["nanoGPT rounds"], r["ours cpu rounds"],
                     r["nanoGPT cpu rounds"], strict=True)  # fmt: skip
        for i, (a, b, ca, cb) in enumerate(rounds):
            lines.append(f"| {r['config']} | {i + 1} | {a:,.0f} | {b:,.0f} | "
                         f"{a / b:.2f} | {ca:,.0f} | {cb:,.0f} | {ca / cb:.2f} | "
                         "| | |")  # fmt: skip
        lines.append(
            f"| **{r['config']}** | median | {r['ours tokens/s']:,.0f} | "
            f"{r['nanoGPT tokens/s']:,.0f} | **{r['ratio']:.2f}** | "
            f"{r['ours tokens/cpu-s']:,.0f} | {r['nanoGPT tokens/cpu-s']:,.0f} | "
            f"**{r['cpu ratio']:.2f}** | {100 * r['ours MFU']:.1f}% "
            f"({100 * r['ours cpu MFU']:.1f}% CPU time) | "
            f"{100 * r['nanoGPT MFU']:.1f}% ({100 * r['nanoGPT cpu MFU']:.1f}% CPU "
            f"time) | {r['load']} |"
        )
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
    parser.add_argument("--nanogpt", metavar="MODEL_PY", default=None,
                        help="compare with nanoGPT's model.py at identical configs")  # fmt: skip
    parser.add_argument("--fp32", action="store_true",
                        help="with --nanogpt: our step in fp32 (default: as "
                        "python -m llmbook.pretrain, bf16 autocast where the CPU "
                        "has bf16 units)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --nanogpt: alternating rounds")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nanogpt:
        rows = compare_nanogpt(args.nanogpt, rounds=args.rounds, steps=args.steps,
                               cpu_bf16=not args.fp32, peak_sizes=args.peak_sizes)  # fmt: skip
        print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; "
              f"CPU bf16 units: {cpu_has_bf16()}; {args.rounds} alternating rounds "
              f"of {args.steps} steps; ours as python -m llmbook.pretrain runs it "
              f"({rows[0]['ours dtype']}), nanoGPT its CPU recipe (fp32); MFU "
              f"against the measured fp32 peak {rows[0]['fp32 peak GFLOP/s']:.0f} "
              f"GFLOP/s ({rows[0]['fp32 peak GFLOP/cpu-s']:.0f} GFLOP per CPU-second)"
              "\n")  # fmt: skip
        print(markdown_nanogpt(rows))
        return rows
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
