"""Beam search (Chapter 6, section 4).

Keep the ``num_beams`` best partial sequences by total log-probability; at each step
extend every beam by every token, rank the candidates, and keep the best again. A
candidate that ends with ``eos_id`` (or reaches the length limit) is finished: it
is scored ``sum of log-probs / generated_length ** length_penalty`` and enters a
list of the ``num_beams`` best finished hypotheses.

The bookkeeping follows ``transformers``' beam search so that the two return the same
tokens (``tests/unit/decoding/test_decoding.py``): ``2 * num_beams`` candidates are ranked per step
(so that enough unfinished ones remain); only a candidate ranked among the first
``num_beams`` may finish; and with ``early_stopping=False`` the search ends when
the best running beam, scored at its current length, can no longer beat the worst
finished one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llmbook.decoding.kv_cache import KVCache, forward_with_cache
from llmbook.decoding.processors import SamplingConfig, process_logits

__all__ = ["beam_search"]

NEG = (
    -1.0e9
)  # "impossible" score, as finite as transformers' (so arithmetic stays exact)


@torch.no_grad()
def _one_prompt(
    model: nn.Module,
    prompt: Tensor,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float,
    eos_id: int | None,
    early_stopping: bool,
    config: SamplingConfig,
    use_cache: bool,
) -> tuple[Tensor, float]:
    n_prompt = prompt.shape[0]
    max_len = n_prompt + max_new_tokens
    context = model.config.context_length
    use_cache = use_cache and max_len - 1 <= context
    running = prompt.repeat(num_beams, 1)  # (num_beams, cur_len)
    scores = torch.full((num_beams,), NEG, device=prompt.device)
    scores[0] = 0.0  # the beams start as copies of the prompt: count it once
    finished: list[
        tuple[float, Tensor]
    ] = []  # (normalised score, sequence), best first
    can_improve = True  # may a running beam still beat the worst finished one?
    cache = KVCache(model, num_beams, max_len - 1) if use_cache else None
    for cur_len in range(n_prompt, max_len):
        if cache is None:
            logits = model(running[:, -context:])[:, -1]
        elif cache.length == 0:
            logits = forward_with_cache(model, running, cache)[:, -1]
        else:
            logits = forward_with_cache(model, running[:, -1:], cache)[:, -1]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        log_probs = process_logits(log_probs, running, config)  # (num_beams, vocab)
        total = (log_probs + scores[:, None]).flatten()  # (num_beams * vocab,)
        top_scores, top = torch.topk(total, 2 * num_beams)  # spares for finished ones
        beam, token = top // log_probs.shape[-1], top % log_probs.shape[-1]
        ends = torch.full_like(token, cur_len + 1 >= max_len, dtype=torch.bool)
        if eos_id is not None:
            ends |= token == eos_id
        full = len(finished) == num_beams
        if can_improve and not (early_stopping and full):
            gen_len = cur_len + 1 - n_prompt
            for rank in range(num_beams):  # only the top num_beams may finish
                if ends[rank]:
                    seq = torch.cat([running[beam[rank]], token[rank : rank + 1]])
                    finished.append(
                        (float(top_scores[rank]) / gen_len**length_penalty, seq)
                    )
            finished.sort(key=lambda item: -item[0])  # stable: earlier ones win ties
            del finished[num_beams:]
        # the best num_beams candidates that did not end carry on
        alive = top_scores + ends.float() * NEG
        scores, chosen = torch.topk(alive, num_beams)
        parents = beam[chosen]
        running = torch.cat([running[parents], token[chosen, None]], dim=1)
        if cache is not None:  # each new beam continues an old one: reorder the cache
            cache.keys = [k[parents] for k in cache.keys]
            cache.values = [v[parents] for v in cache.values]
        full = len(finished) == num_beams
        if bool(ends.all()) or (early_stopping and full):
            break
        if full:  # the best running beam, scored at its current length
            best_running = float(scores[0]) / (cur_len + 1 - n_prompt) ** length_penalty
            can_improve = best_running > finished[-1][0]
            if not can_improve:
                break
    best_score, best = finished[0]
    return best, best_score


def beam_search(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    num_beams: int = 4,
    *,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    early_stopping: bool = False,
    repetition_penalty: float | None = None,
    use_cache: bool = True,
    pad_id: int | None = None,
) -> Tensor:
    """The best of ``num_beams`` beams for each prompt in ``idx`` (batch, seq).

    Returns (batch, seq + n) ids: each row is its prompt followed by the winning
    continuation (which ends with ``eos_id`` if it finished early), rows padded on
    the right with ``pad_id`` (default ``eos_id``) to the longest. ``num_beams=1``
    is greedy decoding. ``length_penalty`` > 0 favours longer hypotheses, < 0
    shorter ones.
    """
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(
            f"idx must be (batch, seq) with seq >= 1, got {tuple(idx.shape)}"
        )
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    vocab = model.config.vocab_size
    if 2 * num_beams > num_beams * vocab:
        raise ValueError(
            f"num_beams={num_beams} needs a vocabulary of at least 2 tokens"
        )
    config = SamplingConfig(temperature=0, repetition_penalty=repetition_penalty)
    was_training = model.training
    model.eval()
    try:
        rows = [
            _one_prompt(model, prompt, max_new_tokens, num_beams, length_penalty,
                        eos_id, early_stopping, config, use_cache)[0]
            for prompt in idx
        ]  # fmt: skip
    finally:
        model.train(was_training)
    width = max(len(r) for r in rows)
    pad = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    out = torch.full((len(rows), width), pad, dtype=idx.dtype, device=idx.device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
