"""Command line: run the GPU paths the chapters promise, and write what they measured.

::

    python -m llmbook.gpu_check --out DIR        # or: make gpu-check

On a CUDA GPU (at most about 8 minutes on one) it runs, with the package's own code:

1. **training**: the ``gpu`` preset for a few hundred steps through
   :func:`llmbook.train.train` (bf16 autocast, fp16 with a scaler on older GPUs, and
   ``torch.compile`` because the preset asks for it); steady tokens/s, the compile
   time, and MFU against the device's dense bf16 peak (from the vendor's datasheet,
   :data:`BF16_PEAK_TFLOPS`; "unknown" for other devices) and against a bf16 matmul
   peak measured on the spot;
2. **batched evaluation** with autocast (:func:`llmbook.metrics.score_sequences`):
   tokens/s, and the per-token loss against an fp32 reference on the CPU;
3. **generation**: new tokens/s with our KV cache (:func:`llmbook.decoding.generate`)
   against Hugging Face ``generate`` on the same weights, batch 1 and 8, same tokens
   checked;
4. **memory**: the trained model's weights in fp32, bf16 and int8
   (:func:`llmbook.deploy.quantize_model`), as tensors and as the CUDA allocator
   counts them, and how far the int8 and bf16 logits move from fp32;
5. **data parallelism**: :mod:`llmbook.train.ddp` over all GPUs with NCCL against one
   process (skipped, saying so, with a single GPU).

It writes ``report.json`` and ``report.md`` into ``DIR``. Without a GPU it runs a
*smoke* mode on the CPU (the ``tiny`` preset, a few steps, small batches; seconds)
that goes through the same functions, so ``make test`` keeps them working
(``tests/unit/test_gpu_check.py``); its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llmbook.data import course_data
from llmbook.decoding import generate
from llmbook.deploy import quantize_model, serialized_bytes
from llmbook.metrics import score_sequences
from llmbook.model import GPT, from_pretrained, model_flops_per_token, to_hf_gpt2
from llmbook.train import PRESETS, History, train, train_dtype
from llmbook.train.ddp import run_single, run_torchrun
from llmbook.utils import seed_everything

__all__ = ["BF16_PEAK_TFLOPS", "bf16_peak_tflops", "run", "main"]

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, as NVIDIA's datasheets
#: give them; matched against ``torch.cuda.get_device_name`` in this order.
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM5
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]


def bf16_peak_tflops(device_name: str) -> float | None:
    """The datasheet dense bf16 peak (TFLOP/s) of a GPU by name, or None if unknown."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Best wall-clock seconds of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measured_peak_tflops(
    device: torch.device, dtype: torch.dtype, n: int, repeats: int = 3
) -> float:
    """Best rate of an (n x n) @ (n x n) matmul in ``dtype`` (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 1

    def product() -> None:
        for _ in range(inner):
            torch.matmul(a, b)

    return inner * 2 * n**3 / _seconds(product, device, repeats) / 1e12


def _plan(smoke: bool, steps: int | None) -> dict[str, Any]:
    if smoke:
        return {"preset": "tiny", "steps": steps or 6, "segments": 2,
                "eval_docs": 8, "gen_new": 8,
                "gen_batches": [1, 2], "peak_n": 256, "ddp_steps": 2,
                "memory_batch": 2}  # fmt: skip
    return {"preset": "gpu", "steps": steps or 300, "segments": 6,
            "eval_docs": 256, "gen_new": 100,
            "gen_batches": [1, 8], "peak_n": 8192, "ddp_steps": 20,
            "memory_batch": 8}  # fmt: skip


def check_training(device: torch.device, plan: dict[str, Any]) -> tuple[GPT, dict]:
    """The preset through :func:`llmbook.train.train`; steady rate from the
    evaluation points (the first segment also pays for compiling)."""
    steps = plan["steps"]
    segment = max(1, steps // plan["segments"])  # an evaluation after each
    config = PRESETS[plan["preset"]].replace(
        max_steps=steps, warmup_steps=min(PRESETS[plan["preset"]].warmup_steps, steps),
        eval_every=segment,
    )  # fmt: skip
    if device.type != "cuda":
        config.compile = False  # as python -m llmbook.pretrain does on the CPU
    seed_everything(config.seed)
    data = course_data(config.model.vocab_size, config.corpus)
    model = GPT(config.model)
    marks: list[tuple[int, float]] = []

    def mark(step: int, history: History) -> None:
        marks.append((step, history.seconds))  # training seconds, evaluation excluded

    history = train(model, data, config, device=device, callback=mark,
                    progress=False, cpu_bf16=True)  # fmt: skip
    per_step_tokens = config.tokens_per_step
    if len(marks) >= 2:
        (s0, t0), (s1, t1) = marks[0], marks[-1]
        steady = (s1 - s0) * per_step_tokens / (t1 - t0)
        first_segment = t0 - s0 * per_step_tokens / steady
    else:
        steady, first_segment = history.tokens_per_second, 0.0
    dtype = train_dtype(device, cpu_bf16=True)
    flops = model_flops_per_token(config.model)
    result = {
        "preset": plan["preset"],
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "autocast": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "compile": config.compile,
        "compile_seconds_estimate": round(max(first_segment, 0.0), 1),
        "train_seconds": round(history.seconds, 1),
        "tokens_per_second_steady": steady,
        "tokens_per_second_overall": history.tokens_per_second,
        "model_tflops_per_second": flops * steady / 1e12,
        "loss_first": history.loss[0],
        "loss_last": history.loss[-1],
        "val_perplexity": history.val_perplexity[-1],
    }
    return model, {"config": config, "data": data, **result}


def check_evaluation(model: GPT, data: Any, device: torch.device, n_docs: int) -> dict:
    """Batched scoring with autocast on ``device`` against fp32 on the CPU."""
    docs = [d for d in data.val_docs if len(d) >= 2][:n_docs]
    starts = [1] * len(docs)
    ctx = model.config.context_length

    def scored(on: torch.device) -> tuple[float, int, float]:
        t0 = time.perf_counter()
        logprob, count = score_sequences(model, docs, starts, ctx, batch_size=32,
                                         device=on)  # fmt: skip
        _sync(on)
        return float(logprob.sum()), int(count.sum()), time.perf_counter() - t0

    score_sequences(model, docs[:2], starts[:2], ctx, device=device)  # warm-up
    lp_dev, n, seconds = scored(device)
    lp_cpu, n_cpu, _ = scored(torch.device("cpu"))
    model.to(device)
    if n != n_cpu:
        raise RuntimeError(f"scored {n} tokens on {device} but {n_cpu} on the CPU")
    return {
        "docs": len(docs),
        "tokens": n,
        "autocast": str(train_dtype(device) or "fp32").removeprefix("torch."),
        "tokens_per_second": n / seconds,
        "nll_per_token": -lp_dev / n,
        "nll_per_token_fp32_cpu": -lp_cpu / n,
        "relative_difference": abs(lp_dev - lp_cpu) / abs(lp_cpu),
    }


def check_generation(device: torch.device, plan: dict[str, Any]) -> list[dict]:
    """Greedy decoding of the shipped course GPT: ours (KV cache) against HF."""
    model = from_pretrained("course-gpt").to(device).eval()
    hf = to_hf_gpt2(model).to(device).eval()
    for config in (hf.config, hf.generation_config):
        config.eos_token_id = None  # exactly new_tokens tokens on both sides
    new = plan["gen_new"]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in plan["gen_batches"]:
        ids = torch.randint(model.config.vocab_size, (batch, 16), generator=gen)
        ids = ids.to(device)
        outputs = {}

        def ours(ids: torch.Tensor = ids, outputs: dict = outputs) -> None:
            outputs["ours"] = generate(model, ids, new, temperature=0, use_cache=True)

        def theirs(ids: torch.Tensor = ids, outputs: dict = outputs) -> None:
            outputs["hf"] = hf.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=0)  # fmt: skip

        with torch.inference_mode():
            t_ours = _seconds(ours, device, repeats=3)
            t_hf = _seconds(theirs, device, repeats=3)
        rows.append({
            "batch": batch, "new_tokens": new,
            "ours_tokens_per_second": batch * new / t_ours,
            "hf_tokens_per_second": batch * new / t_hf,
            "ratio": t_hf / t_ours,
            "same_tokens": bool(torch.equal(outputs["ours"], outputs["hf"])),
        })  # fmt: skip
    return rows


def _tensor_bytes(model: torch.nn.Module) -> int:
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[t.data_ptr()] = t.numel() * t.element_size()  # tied weights once
    return sum(seen.values())


def check_memory(model: GPT, device: torch.device, batch: int) -> list[dict]:
    """The trained model's weights in fp32, bf16 and int8 (weight-only ``w8``)."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    ids = torch.randint(model.config.vocab_size, (batch, model.config.context_length),
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    variants = {
        "fp32": lambda: copy.deepcopy(cpu_model),
        "bf16": lambda: copy.deepcopy(cpu_model).to(torch.bfloat16),
        "int8 (w8)": lambda: quantize_model(copy.deepcopy(cpu_model), "w8"),
    }
    reference = None
    rows = []
    for name, build in variants.items():
        m = build()
        row: dict[str, Any] = {"weights": name, "tensor_bytes": _tensor_bytes(m),
                               "serialized_bytes": serialized_bytes(m)}  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            m = m.to(device)
            row["cuda_allocated_bytes"] = torch.cuda.memory_allocated(device) - before
        with torch.inference_mode():
            logits = m(ids.to(device)).float().cpu()
        if device.type == "cuda":
            row["cuda_peak_forward_bytes"] = (
                torch.cuda.max_memory_allocated(device) - before
            )
        if reference is None:
            reference = logits
        row["max_abs_logit_change"] = float((logits - reference).abs().max())
        rows.append(row)
        del m
    return rows


def check_ddp(device: torch.device, plan: dict[str, Any]) -> dict:
    """:mod:`llmbook.train.ddp` over every GPU (NCCL) against one process."""
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if n < 2:
            return {"status": "skipped", "reason": f"{n} GPU: DDP over NCCL needs 2+"}
        extra = ["--device", "cuda"]
    elif not plan.get("ddp_on_cpu"):
        return {"status": "skipped", "reason": "no GPU (two CPU ranks over gloo: "
                "--ddp-on-cpu, or tests/unit/train/test_ddp.py)"}  # fmt: skip
    else:
        n, extra = 2, ["--device", "cpu"]  # two CPU ranks over gloo
    args = ["--preset", plan["preset"], "--steps", str(plan["ddp_steps"]),
            "--global-batch", str(8 * n), *extra]  # fmt: skip
    t0 = time.perf_counter()
    single = run_single(args, timeout=300)
    t1 = time.perf_counter()
    ranks = run_torchrun(n, args, timeout=300)
    t2 = time.perf_counter()
    diff = max(abs(a - b) / abs(b) for a, b in zip(ranks["loss"], single["loss"],
                                                      strict=True))  # fmt: skip
    return {
        "status": "ran", "world_size": ranks["world_size"],
        "backend": ranks["backend"], "steps": plan["ddp_steps"],
        "max_relative_loss_difference": diff,
        "single_seconds": round(t1 - t0, 1), "ddp_seconds": round(t2 - t1, 1),
    }  # fmt: skip


def run(
    out: str | Path,
    smoke: bool | None = None,
    steps: int | None = None,
    ddp_on_cpu: bool = False,
) -> dict:
    """Run every check and write ``report.json`` and ``report.md`` into ``out``.

    ``smoke`` defaults to True without CUDA. Without a GPU the data-parallel check
    is skipped unless ``ddp_on_cpu`` (two CPU ranks over gloo: two subprocess
    launches, tens of seconds). Returns the report as a dict.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    smoke = device.type != "cuda" if smoke is None else smoke
    plan = {**_plan(smoke, steps), "ddp_on_cpu": ddp_on_cpu}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu: {platform.processor() or platform.machine()}")  # fmt: skip
    report: dict[str, Any] = {
        "mode": "smoke (CPU, tiny sizes: not a GPU measurement)" if smoke else "full",
        "device": name,
        "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    datasheet = bf16_peak_tflops(name) if device.type == "cuda" else None
    peak_dtype = train_dtype(device, cpu_bf16=True) or torch.float32
    report["peak"] = {
        "datasheet_bf16_dense_tflops": datasheet if datasheet else "unknown",
        "measured_tflops": measured_peak_tflops(device, peak_dtype, plan["peak_n"]),
        "measured_dtype": str(peak_dtype).removeprefix("torch."),
    }
    model, training = check_training(device, plan)
    data = training.pop("data")
    training.pop("config")
    achieved = training["model_tflops_per_second"]
    training["mfu_vs_datasheet"] = achieved / datasheet if datasheet else "unknown"
    training["mfu_vs_measured"] = achieved / report["peak"]["measured_tflops"]
    report["training"] = training
    report["evaluation"] = check_evaluation(model, data, device, plan["eval_docs"])
    report["generation"] = check_generation(device, plan)
    report["memory"] = check_memory(model, device, plan["memory_batch"])
    report["ddp"] = check_ddp(device, plan)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page."""
    t, e, p = report["training"], report["evaluation"], report["peak"]

    def pct(x: Any) -> str:
        return f"{100 * x:.1f}%" if isinstance(x, float) else str(x)

    lines = [
        "# GPU check",
        "",
        f"Device: **{report['device']}** ({report['gpus']} GPU(s)); torch "
        f"{report['torch']}, CUDA {report['cuda']}; mode: {report['mode']}; "
        f"{report['seconds']} s in all. Made by `python -m llmbook.gpu_check`.",
        "",
        "## Training",
        "",
        f"The `{t['preset']}` preset, {t['steps']} steps through `llmbook.train.train`"
        f" ({t['parameters']:,} parameters, autocast {t['autocast']}, compile "
        f"{t['compile']}; compile time about {t['compile_seconds_estimate']} s).",
        "",
        "| tokens/s (steady) | model TFLOP/s | MFU vs datasheet bf16 peak | "
        "MFU vs measured peak | loss first -> last | val perplexity |",
        "|---|---|---|---|---|---|",
        f"| {_fmt(t['tokens_per_second_steady'])} | "
        f"{t['model_tflops_per_second']:.3g} | {pct(t['mfu_vs_datasheet'])} "
        f"({p['datasheet_bf16_dense_tflops']} TFLOP/s) | {pct(t['mfu_vs_measured'])} "
        f"({p['measured_tflops']:.3g} TFLOP/s {p['measured_dtype']} matmul) | "
        f"{t['loss_first']:.3f} -> {t['loss_last']:.3f} | {t['val_perplexity']:.2f} |",
        "",
        "## Batched evaluation",
        "",
        f"{e['docs']} validation documents, {e['tokens']:,} tokens, autocast "
        f"{e['autocast']}: {_fmt(e['tokens_per_second'])} tokens/s; loss "
        f"{e['nll_per_token']:.4f} nats/token against {e['nll_per_token_fp32_cpu']:.4f}"
        f" in fp32 on the CPU (relative difference {e['relative_difference']:.1e}).",
        "",
        "## Generation (shipped course GPT, greedy, KV cache)",
        "",
        "| batch | new tokens | ours tokens/s | HF generate tokens/s | ours / HF | "
        "same tokens |",
        "|---|---|---|---|---|---|",
    ]
    for g in report["generation"]:
        lines.append(
            f"| {g['batch']} | {g['new_tokens']} | {_fmt(g['ours_tokens_per_second'])}"
            f" | {_fmt(g['hf_tokens_per_second'])} | {g['ratio']:.2f} | "
            f"{g['same_tokens']} |"
        )
    lines += ["", "## Memory of the trained model", "",
              "| weights | tensor MiB | serialized MiB | CUDA allocated MiB | "
              "CUDA peak in a forward MiB | max logit change vs fp32 |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    mib = 2**20
    for m in report["memory"]:
        cuda = m.get("cuda_allocated_bytes")
        peak = m.get("cuda_peak_forward_bytes")
        lines.append(
            f"| {m['weights']} | {m['tensor_bytes'] / mib:.2f} | "
            f"{m['serialized_bytes'] / mib:.2f} | "
            f"{'n/a' if cuda is None else f'{cuda / mib:.2f}'} | "
            f"{'n/a' if peak is None else f'{peak / mib:.2f}'} | "
            f"{m['max_abs_logit_change']:.3g} |"
        )
    d = report["ddp"]
    lines += ["", "## Data parallelism", ""]
    if d["status"] == "skipped":
        lines.append(f"Skipped: {d['reason']}.")
    else:
        lines.append(
            f"{d['world_size']} ranks over {d['backend']}, {d['steps']} steps: losses "
            f"within {d['max_relative_loss_difference']:.1e} (relative) of one process;"
            f" {d['ddp_seconds']} s against {d['single_seconds']} s (launch included)."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m llmbook.gpu_check --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="directory for the reports")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (the default without CUDA)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default 300; smoke 6)")  # fmt: skip
    parser.add_argument("--ddp-on-cpu", action="store_true",
                        help="without a GPU, still run DDP on two CPU ranks (gloo)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be positive, got {args.steps}")
    report = run(args.out, smoke=True if args.smoke else None, steps=args.steps,
                 ddp_on_cpu=args.ddp_on_cpu)  # fmt: skip
    print((Path(args.out) / "report.md").read_text())
    return report


if __name__ == "__main__":
    main()
