"""Speculative decoding (Chapter 6, section 7; Leviathan et al. 2023, Chen et al. 2023).

A small *draft* model proposes ``k`` tokens one at a time; the large *target* model
scores all of them in one forward pass. Draft token x, drawn with draft probability
q(x) where the target gives p(x), is accepted with probability min(1, p(x) / q(x)).
At the first rejection a replacement is drawn from the leftover distribution
max(0, p - q) (renormalised) and the round ends; when all ``k`` are accepted, the
target's distribution after them gives one more token for free. Every token produced
this way is distributed exactly as if the target had sampled it alone
(``tests/unit/decoding/test_decoding.py`` checks this with a chi-square test), while the target
runs once per round instead of once per token.

Greedy decoding (``temperature=0``) is the special case where p and q put all their
mass on their argmax: a draft token is accepted when it is the target's argmax, so
the output equals the target's greedy output token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llmbook.decoding.kv_cache import KVCache, forward_with_cache
from llmbook.decoding.processors import SamplingConfig, process_logits

__all__ = ["SpeculativeStats", "accept_or_resample", "speculative_generate"]


@dataclass
class SpeculativeStats:
    """Counters of one :func:`speculative_generate` call."""

    rounds: int = 0  # target forward passes after the prompt
    proposed: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens accepted
    new_tokens: int = 0  # tokens produced

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def tokens_per_round(self) -> float:
        return self.new_tokens / self.rounds if self.rounds else float("nan")


def _probs(logits: Tensor, ids: Tensor, config: SamplingConfig) -> Tensor:
    """The distribution a token is drawn from (1, vocab); one-hot when greedy."""
    logits = process_logits(logits.float(), ids, config)
    if config.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits, dim=-1)


def accept_or_resample(
    p: Tensor,
    q: Tensor,
    drafted: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """The acceptance rule for one round.

    p: (k + 1, vocab) target distributions (row i: after i draft tokens);
    q: (k, vocab) draft distributions the ``drafted`` tokens (k,) were drawn from.
    Returns (number of accepted draft tokens a, the token that follows them): a
    draw from max(0, p_a - q_a) after a rejection, from p_k when all were accepted.
    """
    k = drafted.shape[0]
    for i in range(k):
        x = int(drafted[i])
        u = torch.rand((), generator=generator, device=p.device)
        if u * q[i, x] < p[i, x]:  # u < p/q, without dividing by a zero q
            continue
        leftover = (p[i] - q[i]).clamp(min=0)
        if float(leftover.sum()) <= 0:  # p == q: nothing left over (cannot reject)
            leftover = p[i]
        nxt = torch.multinomial(leftover / leftover.sum(), 1, generator=generator)
        return i, int(nxt)
    return k, int(torch.multinomial(p[k], 1, generator=generator))


@torch.no_grad()
def speculative_generate(
    target: nn.Module,
    draft: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    k: int = 4,
    config: SamplingConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> tuple[Tensor, SpeculativeStats]:
    """Generate up to ``max_new_tokens`` after ``idx`` (1, seq) with ``target``,
    ``k`` draft tokens per round from ``draft`` (same vocabulary). Returns the ids
    (1, seq + n) and the counters. Both models keep a KV cache, so the prompt plus
    the new tokens plus ``k`` must fit in both context lengths."""
    if idx.dim() != 2 or idx.shape[0] != 1 or idx.shape[1] == 0:
        raise ValueError(f"idx must be one prompt, (1, seq), got {tuple(idx.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(
            f"target and draft vocabularies differ: {target.config.vocab_size} "
            f"and {draft.config.vocab_size}"
        )
    need = idx.shape[1] + max_new_tokens + k
    room = min(target.config.context_length, draft.config.context_length)
    if need > room:
        raise ValueError(
            f"prompt ({idx.shape[1]}) + max_new_tokens ({max_new_tokens}) + k ({k}) = "
            f"{need} exceeds the smaller context length, {room}"
        )
    config = SamplingConfig() if config is None else config
    modes = target.training, draft.training
    target.eval()
    draft.eval()
    t_cache, d_cache = KVCache(target, 1, need), KVCache(draft, 1, need)
    ids, stats = idx, SpeculativeStats()
    try:
        while stats.new_tokens < max_new_tokens:
            n = min(k, max_new_tokens - stats.new_tokens - 1)  # room for the bonus
            drafted, q = [], []
            seq = ids
            for _ in range(n):  # the draft proposes n tokens, one at a time
                logits = forward_with_cache(draft, seq[:, d_cache.length :], d_cache)
                q.append(_probs(logits[:, -1], seq, config)[0])
                drafted.append(torch.multinomial(q[-1], 1, generator=generator))
                seq = torch.cat([seq, drafted[-1][None]], dim=1)
            # the target scores the prompt's pending token and all drafts at once
            logits = forward_with_cache(target, seq[:, t_cache.length :], t_cache)[0]
            start = ids.shape[1]
            p = torch.cat(
                [
                    _probs(logits[-(n + 1) + i][None], seq[:, : start + i], config)
                    for i in range(n + 1)
                ]
            )  # (n + 1, vocab), fmt: skip
            drafted_t = torch.cat(drafted) if drafted else idx.new_zeros(0)
            a, nxt = accept_or_resample(p, torch.stack(q) if q else p[:0], drafted_t,
                                        generator)  # fmt: skip
            stats.rounds += 1
            stats.proposed += n
            stats.accepted += a
            new = torch.cat([drafted_t[:a], drafted_t.new_tensor([nxt])])
            # keep the caches for the accepted tokens only
            t_cache.truncate(start + a)
            d_cache.truncate(min(d_cache.length, start + a))
            if eos_id is not None and bool((new == eos_id).any()):
                new = new[: int((new == eos_id).nonzero()[0]) + 1]
                ids = torch.cat([ids, new[None]], dim=1)
                stats.new_tokens += len(new)
                break
            ids = torch.cat([ids, new[None]], dim=1)
            stats.new_tokens += len(new)
    finally:
        target.train(modes[0])
        draft.train(modes[1])
    return ids, stats
