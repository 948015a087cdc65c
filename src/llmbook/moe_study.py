"""Dense versus mixture-of-experts GPTs on the course corpus (Chapter 10).

``python -m llmbook.moe_study --out FILE`` trains small GPTs of the same shape (the
``draft`` preset's 2 layers of width 64, context 128) that differ only in their
feed-forward networks, in the course's training loop, and writes what Chapter 10
plots to ``FILE`` (the shipped copy is ``llmbook/weights/moe-study/results.json``).
The runs (the first four by default, ``--runs`` to choose):

=================  ==============================================================
``dense``          one FFN of width 256 per block
``dense-wide``     one FFN of width 1024: as many parameters as ``moe-4x256``
``moe-4x256``      4 experts of width 256, top-1 (Switch): the compute of ``dense``
``moe-4x256-nobal``  the same without the load-balancing loss
``moe-8x128-top2`` 8 experts of width 128, top-2, renormalised gates (Mixtral),
                   optional
=================  ==============================================================

Every run is trained once per ``--seeds`` seed (the seed draws the initialisation
and the batches, so for one seed all runs see the same batches), with AdamW and the
Chapter 5 schedule, and evaluated on the first ``--val-docs`` documents of the
course validation split. Each record holds, for the first seed, the validation
perplexity at every evaluation, the training FLOPs spent by then (``moe_flops_per_token``
times tokens), total and active parameters, the experts' load (share of
assignments) every ``LOAD_EVERY`` steps, and, for the MoE runs, the tokens each
expert of each layer takes (on the whole validation split); and for every seed its
perplexities (``val_ppl_by_seed``) and wall-clock seconds. The default (4 runs of
1,000 steps of 8 windows, 5 seeds) took 41 minutes on one CPU thread of a two-core
machine that other work shared (load about 4); the seconds it records depend on that.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from llmbook.data import course_data
from llmbook.data.tokenization import course_tokenizer
from llmbook.model.gpt import GPT, GPTConfig, count_parameters, model_flops_per_token
from llmbook.model.moe import (
    MoEConfig,
    moe_aux_loss,
    moe_flops_per_token,
    moe_gpt,
    moe_layers,
    moe_parameter_counts,
)
from llmbook.train import PRESETS, History, TrainConfig, train
from llmbook.utils import seed_everything

__all__ = ["RUNS", "DEFAULT_RUNS", "BASE", "RESULTS", "run_one", "main"]

RESULTS = Path(__file__).resolve().parent / "weights" / "moe-study" / "results.json"
LOAD_EVERY = 25

#: the draft GPT's shape (2 layers of width 64, FFN 256, context 128), every run's
BASE = PRESETS["draft"].model

#: name -> (d_ff of a dense model, or the MoEConfig of an MoE model)
RUNS: dict[str, int | MoEConfig] = {
    "dense": 256,
    "dense-wide": 1024,
    "moe-4x256": MoEConfig(n_experts=4, top_k=1, d_expert=256, balance_coef=0.01),
    "moe-4x256-nobal": MoEConfig(n_experts=4, top_k=1, d_expert=256, balance_coef=0.0),
    "moe-8x128-top2": MoEConfig(
        n_experts=8, top_k=2, d_expert=128, renormalize=True, balance_coef=0.01
    ),
}


#: the runs ``python -m llmbook.moe_study`` trains by default (the chapter's table)
DEFAULT_RUNS = ["dense", "dense-wide", "moe-4x256", "moe-4x256-nobal"]


def build(spec: int | MoEConfig) -> tuple[GPT, GPTConfig, dict[str, int]]:
    """The model of one run, its GPTConfig and its sizes (parameters, FLOPs/token)."""
    if isinstance(spec, MoEConfig):
        model = moe_gpt(BASE, spec)
        total, active = moe_parameter_counts(BASE, spec)
        flops = moe_flops_per_token(BASE, spec)
        return model, BASE, {"total": total, "active": active, "flops_per_token": flops}
    config = GPTConfig(**{**BASE.__dict__, "d_ff": spec})
    n = count_parameters(config)
    sizes = {"total": n, "active": n, "flops_per_token": model_flops_per_token(config)}
    return GPT(config), config, sizes


def _purity(expert: torch.Tensor, key: torch.Tensor, keep: torch.Tensor) -> float:
    """Share of the kept tokens whose expert is the most common expert of their key
    (their token id, or their position): how well the key predicts the expert."""
    expert, key = expert[keep], key[keep]
    n_experts = int(expert.max()) + 1
    joint = torch.zeros(int(key.max()) + 1, n_experts)
    joint.index_put_(
        (key, expert), torch.ones_like(key, dtype=torch.float), accumulate=True
    )
    return round(joint.max(dim=1).values.sum().item() / key.numel(), 4)


@torch.no_grad()
def expert_tokens(
    model: GPT, docs: list[list[int]], decode, top: int = 8, min_count: int = 20
) -> list[dict[str, Any]]:
    """Which tokens each expert of each MoE layer takes (first choices).

    Per layer: ``tokens``, for each expert the ``top`` tokens (seen at least
    ``min_count`` times) with the largest share of their occurrences routed to it, as
    ``[text, share, count]``; ``load``, each expert's share; and three *purities*
    (share of tokens whose expert is the most common one for their token id, for
    their position in the window, or overall), over the tokens seen ``min_count``
    times: how much of the routing the token's identity explains, against its
    position.
    """
    model.eval()
    ctx = model.config.context_length
    ids = torch.tensor([t for doc in docs for t in doc])
    n = (ids.numel() // ctx) * ctx
    windows = ids[:n].view(-1, ctx)
    layers = moe_layers(model)
    firsts: list[list[torch.Tensor]] = [[] for _ in layers]
    for batch in windows.split(64):
        model(batch)
        for i, layer in enumerate(layers):
            firsts[i].append(layer.routing.index[:, 0])
    tokens = windows.flatten()
    positions = torch.arange(ctx).repeat(windows.shape[0])
    vocab = model.config.vocab_size
    seen = torch.bincount(tokens, minlength=vocab).float()
    frequent = seen[tokens] >= min_count
    result = []
    for i, layer in enumerate(layers):
        first = torch.cat(firsts[i])
        per_expert = []
        for e in range(layer.n_experts):
            hits = torch.bincount(tokens[first == e], minlength=vocab).float()
            share = torch.where(seen >= min_count, hits / seen.clamp(min=1), -1.0)
            best = share.topk(top).indices.tolist()
            per_expert.append(
                [[decode([t]), round(share[t].item(), 3), int(seen[t])] for t in best]
            )
        counts = torch.bincount(first, minlength=layer.n_experts).float()
        result.append(
            {
                "tokens": per_expert,
                "load": [round(c, 4) for c in (counts / counts.sum()).tolist()],
                "purity_token": _purity(first, tokens, frequent),
                "purity_position": _purity(first, positions, frequent),
                "purity_none": _purity(first, torch.zeros_like(tokens), frequent),
            }
        )
    model.train()
    return result


def run_one(
    name: str,
    steps: int,
    batch_size: int,
    eval_every: int,
    data,
    decode,
    seed: int = 0,
    experts: bool = True,
) -> dict[str, Any]:
    """Train one run of ``RUNS`` in the course's training loop and return its record
    (with the experts' tokens on the validation split when `experts`)."""
    seed_everything(seed)
    spec = RUNS[name]
    model, config, sizes = build(spec)
    train_cfg = TrainConfig(
        model=config, batch_size=batch_size, max_steps=steps, seed=seed,
        warmup_steps=steps // 10, eval_every=eval_every, lr=3e-3, min_lr=3e-4,
    )  # fmt: skip
    moe = spec if isinstance(spec, MoEConfig) else None
    record: dict[str, Any] = {"name": name, **sizes, "steps": [], "val_ppl": []}
    record["tokens_per_step"] = batch_size * config.context_length
    record["load_steps"], record["load"] = [], []

    def record_load(step: int, model: torch.nn.Module) -> None:
        if moe is not None and step % LOAD_EVERY == 0:
            loads = [
                (layer.routing.counts().float() / layer.routing.index.numel()).tolist()
                for layer in moe_layers(model)
            ]
            record["load_steps"].append(step)
            record["load"].append(loads)

    def report(step: int, history: History) -> None:
        ppl = history.val_perplexity[-1]
        record["steps"].append(step)
        record["val_ppl"].append(round(ppl, 3))
        print(f"{name:16s} step {step:5d} val ppl {ppl:8.2f}", flush=True)

    start = time.perf_counter()
    train(model, data, train_cfg, callback=report, progress=False,
          aux_loss=None if moe is None else lambda m: moe_aux_loss(m, moe),
          on_step=record_load)  # fmt: skip
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["flops"] = [
        s * record["tokens_per_step"] * sizes["flops_per_token"]
        for s in record["steps"]
    ]
    if moe is not None and experts:
        record["experts"] = expert_tokens(model, data.all_val_docs, decode)
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--val-docs", type=int, default=100)
    parser.add_argument("--runs", nargs="*", default=DEFAULT_RUNS)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
        help="one training per seed (initialisation and batches); the first seed's "
        "run keeps its curves, loads and experts, every seed adds its perplexities",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, required=True,
        help=f"the results file (the shipped one is {RESULTS.relative_to(RESULTS.parents[2])})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {list(RUNS)}")
    torch.set_num_threads(1)
    data = course_data(BASE.vocab_size)
    data.all_val_docs = data.val_docs  # the expert analysis reads them all
    data.val_docs = data.val_docs[: args.val_docs]  # perplexity: the first documents
    tokenizer = course_tokenizer(BASE.vocab_size)
    results: dict[str, Any] = {
        "command": "python -m llmbook.moe_study "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "eval_every": args.eval_every,
                "val_docs": args.val_docs,
                "seeds": " ".join(map(str, args.seeds)),
            }.items()
        ),  # fmt: skip
        "base": BASE.__dict__,
        "torch": torch.__version__,
        "seeds": args.seeds,
        "runs": {},
    }
    for name in args.runs:
        records = [
            run_one(name, args.steps, args.batch_size, args.eval_every, data,
                    tokenizer.decode, seed=seed, experts=i == 0)
            for i, seed in enumerate(args.seeds)
        ]  # fmt: skip
        record = records[0]
        record["val_ppl_by_seed"] = [r["val_ppl"] for r in records]
        record["seconds_by_seed"] = [r["seconds"] for r in records]
        results["runs"][name] = record
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
