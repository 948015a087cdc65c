"""Data-parallel pretraining: several processes, one model, one global batch.

Each process (a *rank*) holds a full replica of the model. Every step, all ranks draw
the same global batch from the same seeded :func:`~llmbook.data.window_iterator`
and keep their own contiguous slice of it; each computes the mean loss over its slice
and calls ``backward``, during which ``DistributedDataParallel`` all-reduces the
gradients and divides by the number of ranks. Every replica then holds the same
averaged gradient and takes the same AdamW step, so the replicas stay identical.

When is that the single-process update on the whole global batch? When every slice
has the same number of loss terms: the global batch divides evenly by the number of
ranks and every window contributes the same number of targets (true for our windows of
fixed length; not for padded batches with ignored labels). Then the mean of the per-rank
means is the global mean, and so are the gradients. Dropout is set to 0 here so the
comparison is exact up to floating-point summation order, and every device trains in
fp32 (no autocast) for the same reason.

Run it with ``torchrun`` (gloo on the CPU, NCCL on CUDA GPUs)::

    torchrun --nproc_per_node=2 -m llmbook.train.ddp --steps 20 --global-batch 16 \\
        --out losses.json

or without ``torchrun`` (``WORLD_SIZE`` unset) as a single process on the whole
global batch, the reference. ``--accelerate`` does the same training through
Hugging Face ``accelerate.Accelerator``, which reads ``torchrun``'s environment (or
use ``accelerate launch --num_processes 2 -m llmbook.train.ddp --accelerate ...``).

From Python, :func:`run_torchrun` launches a run in a subprocess and returns the JSON
that rank 0 wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import Tensor, nn

from llmbook.data.batching import course_data, window_iterator
from llmbook.model.gpt import GPT
from llmbook.train.config import PRESETS, TrainConfig
from llmbook.train.loop import evaluate_perplexity
from llmbook.train.step import lr_at, make_optimizer, train_step

__all__ = [
    "rank_slice",
    "train_rank",
    "main",
    "run_torchrun",
    "run_single",
    "free_port",
]


def rank_slice(global_batch: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's contiguous share of a (global_batch, L + 1) batch.

    Raises ``ValueError`` unless the batch divides evenly: equal slices are the
    condition under which averaging per-rank mean gradients gives the global mean.
    """
    n = global_batch.shape[0]
    if n % world_size != 0:
        raise ValueError(
            f"global batch {n} is not divisible by world size {world_size}: "
            "ranks would get unequal slices and DDP's gradient average would no "
            "longer equal the global-batch gradient"
        )
    per_rank = n // world_size
    return global_batch[rank * per_rank : (rank + 1) * per_rank]


def train_rank(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Tensor],
    config: TrainConfig,
    steps: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    backward: Callable[[Tensor], None] | None = None,
    device: torch.device | str = "cpu",
) -> list[float]:
    """The loop every rank runs; returns the global mean loss (nats) of each step.

    Each step is :func:`~llmbook.train.step.train_step` on this rank's slice: the loss
    is the mean over the slice only, and during ``backward`` DDP all-reduces and
    averages the gradients over the ranks, so every rank takes the same update.
    """
    losses = []
    for step in range(steps):
        batch = rank_slice(next(batches), rank, world_size).to(device)  # (B/W, L+1)
        loss = train_step(model, optimizer, [batch], lr=lr_at(step, config),
                          grad_clip=config.grad_clip, backward=backward)  # fmt: skip
        total = loss.clone()
        if world_size > 1:
            dist.all_reduce(total)  # sum of the per-rank means (gloo has no AVG)
        losses.append(total.item() / world_size)
    return losses


# --------------------------------------------------------------------------------------
# The command line: one rank's program
# --------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.train.ddp",
        description="Data-parallel pretraining of a small course GPT (run under "
        "torchrun for several ranks; without it, one process is the reference).",
    )
    causal = sorted(name for name, c in PRESETS.items() if c.objective == "causal")
    parser.add_argument("--preset", choices=causal, default="tiny")  # GPT presets
    parser.add_argument("--d-model", type=int, default=None, help="override d_model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=16, help="blocks per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerate", action="store_true",
                        help="train through accelerate.Accelerator")  # fmt: skip
    parser.add_argument("--eval", action="store_true",
                        help="also report the final validation perplexity")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per rank")  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu or cuda (default: best)")
    parser.add_argument("--out", default=None, help="JSON file rank 0 writes")
    parser.add_argument("--save-weights", default=None,
                        help="rank 0 saves the final state_dict here")  # fmt: skip
    args = parser.parse_args(argv)
    if args.steps < 1 or args.global_batch < 1:
        parser.error("--steps and --global-batch must be positive")
    return args


def _config(args: argparse.Namespace) -> TrainConfig:
    model: dict[str, Any] = {"dropout": 0.0}  # no randomness in the forward pass
    if args.d_model is not None:
        model["d_model"] = args.d_model
    return PRESETS[args.preset].replace(
        model=model,
        batch_size=args.global_batch,
        max_steps=args.steps,
        warmup_steps=min(PRESETS[args.preset].warmup_steps, args.steps),
        seed=args.seed,
    )


def _check_same_weights(model: nn.Module) -> None:
    """Raise unless every rank starts from rank 0's weights, bit for bit."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    if not torch.equal(reference, flat):
        raise RuntimeError(
            f"rank {dist.get_rank()} initialised different weights from rank 0 "
            "(same --seed on every rank?)"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """One rank of a data-parallel run (or the single-process reference).

    Returns rank 0's results (``None`` on the other ranks) and writes them to
    ``--out`` as JSON: the per-step global mean ``loss``, ``world_size``, ``mode``,
    ``seconds`` (model construction to the end of training, process-group set-up
    included) and, with ``--eval``, ``val_perplexity``.
    """
    args = _parse(argv)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.global_batch % world_size != 0:
        raise SystemExit(
            f"error: --global-batch {args.global_batch} is not divisible by the "
            f"world size {world_size}; choose a multiple of {world_size}"
        )
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    if not use_cuda:
        torch.set_num_threads(args.threads)
    config = _config(args)
    data = course_data(config.model.vocab_size, config.corpus)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = GPT(config.model)
    t0 = time.perf_counter()
    batches = window_iterator(
        data.train_stream, config.model.context_length, args.global_batch, config.seed
    )  # every rank draws the same global batch and keeps its slice

    if args.accelerate:
        accelerator = Accelerator(cpu=not use_cuda)
        device = accelerator.device
        world_size, rank = accelerator.num_processes, accelerator.process_index
        if world_size > 1:
            _check_same_weights(model)
        optimizer = make_optimizer(model, config)
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        losses = train_rank(wrapped, optimizer, batches, config, args.steps,
                            rank=rank, world_size=world_size,
                            backward=accelerator.backward, device=device)  # fmt: skip
        model = accelerator.unwrap_model(wrapped)
        backend = getattr(accelerator.state, "backend", None) or "none"
    else:
        if use_cuda:
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        model.to(device)
        backend = "none"
        wrapped: nn.Module = model
        if world_size > 1:
            backend = "nccl" if use_cuda else "gloo"
            dist.init_process_group(backend, device_id=device if use_cuda else None)
            _check_same_weights(model)
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[local_rank] if use_cuda else None
            )  # also broadcasts rank 0's weights and buffers
        optimizer = make_optimizer(model, config)
        losses = train_rank(wrapped, optimizer, batches, config, args.steps,
                            rank=rank, world_size=world_size,
                            device=device)  # fmt: skip
    seconds = time.perf_counter() - t0

    results = None
    if rank == 0:
        results = {
            "mode": "accelerate" if args.accelerate else "ddp",
            "backend": backend,
            "world_size": world_size,
            "global_batch": args.global_batch,
            "per_rank_batch": args.global_batch // world_size,
            "steps": args.steps,
            "d_model": config.model.d_model,
            "loss": losses,
            "seconds": round(seconds, 3),
            "device": str(device),
        }
        if args.eval:
            results["val_perplexity"] = evaluate_perplexity(
                model, data.val_docs, data.eos_id
            )
        if args.save_weights:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save(state, args.save_weights)
            results["weights"] = str(args.save_weights)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 has written its files before anyone exits
        dist.destroy_process_group()
    return results


# --------------------------------------------------------------------------------------
# Launching from Python (tests, notebooks)
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(
    prefix: list[str], args: Sequence[str], timeout: float, what: str
) -> dict[str, Any]:
    args = list(args)
    with tempfile.TemporaryDirectory() as tmp:
        if "--out" not in args:
            args += ["--out", str(Path(tmp) / "results.json")]
        out = Path(args[args.index("--out") + 1])
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",  # one thread per rank: 2 ranks on 2 cores
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "PYTHONWARNINGS": "ignore",
        }
        command = [sys.executable, *prefix, "-m", "llmbook.train.ddp", *args]
        try:
            proc = subprocess.run(command, capture_output=True, text=True,
                                  timeout=timeout, env=env)  # fmt: skip
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(
                f"{what} did not finish within {timeout} s: {' '.join(command)}"
            ) from err
        if proc.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit code {proc.returncode}): {' '.join(command)}\n"
                f"--- stderr ---\n{proc.stderr[-4000:]}"
            )
        if not out.exists():
            raise RuntimeError(f"{what} finished but wrote no {out}\n{proc.stderr}")
        return json.loads(out.read_text())


def run_torchrun(
    nproc: int, args: Sequence[str] = (), timeout: float = 120
) -> dict[str, Any]:
    """Run ``torchrun --nproc_per_node=nproc -m llmbook.train.ddp ARGS`` and return rank
    0's JSON results (a temporary ``--out`` file is used unless ``args`` has one).

    The rendezvous uses a free local port, so concurrent runs (parallel test
    workers) do not collide. Raises ``RuntimeError`` with the subprocess's stderr if
    the run fails or exceeds ``timeout`` seconds.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    prefix = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
              "--nnodes=1", "--master_addr=127.0.0.1",
              f"--master_port={free_port()}"]  # fmt: skip
    return _launch(prefix, args, timeout, f"torchrun with {nproc} processes")


def run_single(args: Sequence[str] = (), timeout: float = 120) -> dict[str, Any]:
    """Run ``python -m llmbook.train.ddp ARGS`` (no torchrun: one process on the whole
    global batch, the reference) and return its JSON results."""
    return _launch([], args, timeout, "single-process run")


if __name__ == "__main__":
    main()
