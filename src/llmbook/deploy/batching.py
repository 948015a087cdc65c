"""Batched generation with left padding, and static vs continuous batching
(Chapter 11, section 4).

:func:`padded_forward` calls the course GPT with two additions to a cached step:
explicit position ids (a left-padded row starts counting at its first real token)
and an attention mask (no query attends to a pad).
:func:`batched_greedy` decodes a batch of prompts of different lengths this way,
with a KV cache; ``tests/unit/deploy/test_serve.py`` checks it gives, token for token, what
decoding each prompt alone gives.

:func:`simulate` replays a stream of requests against a measured cost per decoding
step, with *static* batching (a batch runs until its longest request is done) or
*continuous* batching (a finished request's slot is refilled at the next step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llmbook.decoding.kv_cache import KVCache

__all__ = [
    "Request",
    "left_pad",
    "padded_forward",
    "batched_greedy",
    "simulate",
]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0):
    """Prompts of different lengths -> ids (batch, max_len), left-padded with
    ``pad_id``, and a bool mask (batch, max_len), True on real tokens."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("need at least one prompt, and no prompt may be empty")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = True
    return ids, mask


@torch.no_grad()
def padded_forward(
    model: nn.Module, idx: Tensor, key_mask: Tensor, cache: KVCache
) -> Tensor:
    """Logits (batch, n_new, vocab) for ``idx`` (batch, n_new) after the cached
    positions, where ``key_mask`` (batch, cache.length + n_new) is True on real
    tokens. Positions count real tokens only; a query sees the real keys up to its
    own position (a left pad, with no real key to see, sees itself)."""
    start, total = cache.length, cache.length + idx.shape[1]
    if key_mask.shape != (idx.shape[0], total):
        raise ValueError(
            f"key_mask must be (batch, {total}), got {tuple(key_mask.shape)}"
        )
    positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, start:]
    return model(
        idx, past_key_values=cache, position_ids=positions, attention_mask=key_mask
    )  # (batch, n_new, vocab)


@torch.no_grad()
def batched_greedy(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int = 0,
) -> list[list[int]]:
    """Greedy continuations (``max_new_tokens`` ids each) of prompts of different
    lengths, decoded together in one left-padded batch with a KV cache."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    if ids.shape[1] + max_new_tokens > model.config.context_length:
        raise ValueError(
            f"the longest prompt ({ids.shape[1]}) plus max_new_tokens "
            f"({max_new_tokens}) exceeds the context_length "
            f"{model.config.context_length}"
        )
    was_training = model.training
    model.eval()
    cache = KVCache(model, len(prompts), ids.shape[1] + max_new_tokens)
    new: list[Tensor] = []
    step_ids = ids
    try:
        for _ in range(max_new_tokens):
            logits = padded_forward(model, step_ids, mask, cache)[:, -1]
            nxt = logits.argmax(dim=-1)  # (batch,)
            new.append(nxt)
            step_ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    finally:
        model.train(was_training)
    if not new:
        return [[] for _ in prompts]
    return torch.stack(new, dim=1).tolist()


@dataclass
class Request:
    """One request of a simulated workload: when it arrives (s) and how many
    tokens it asks for."""

    arrival: float
    new_tokens: int


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)  # nearest-rank
    return ordered[rank]


def simulate(
    requests: Sequence[Request],
    step_seconds: Callable[[int], float],
    max_batch: int,
    policy: str = "continuous",
) -> dict[str, float]:
    """Replay ``requests`` on one model replica. A decoding step over ``b``
    sequences takes ``step_seconds(b)`` and gives each one token (the prompt's
    prefill is counted as one step). ``"static"``: take up to ``max_batch`` waiting
    requests and run them until the longest is done; ``"continuous"``: after every
    step, finished requests leave and waiting ones take their slots.

    Returns throughput (generated tokens/s), and p50/p95/mean latency (s, arrival
    to last token)."""
    if policy not in ("static", "continuous"):
        raise ValueError(f"policy must be 'static' or 'continuous', got {policy!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if not requests:
        raise ValueError("need at least one request")
    if any(r.new_tokens < 1 for r in requests):
        raise ValueError("every request must ask for at least one token")
    pending = sorted(range(len(requests)), key=lambda i: requests[i].arrival)
    left = {i: requests[i].new_tokens for i in pending}
    done_at: dict[int, float] = {}
    now, running = 0.0, []
    while pending or running:
        if not running and pending and requests[pending[0]].arrival > now:
            now = requests[pending[0]].arrival  # idle until the next arrival
        if policy == "continuous" or not running:
            while pending and len(running) < max_batch:
                if requests[pending[0]].arrival > now:
                    break
                running.append(pending.pop(0))
        # a static batch keeps its padded rows until the longest request ends
        now += step_seconds(len(running))
        for i in running:
            left[i] -= 1
            if left[i] == 0:
                done_at[i] = now
        if policy == "continuous" or all(left[i] <= 0 for i in running):
            running = [i for i in running if left[i] > 0]
    latencies = [done_at[i] - requests[i].arrival for i in done_at]
    tokens = sum(r.new_tokens for r in requests)
    first = min(r.arrival for r in requests)
    return {
        "throughput": tokens / (max(done_at.values()) - first),
        "p50": _percentile(latencies, 50),
        "p95": _percentile(latencies, 95),
        "mean": sum(latencies) / len(latencies),
    }
