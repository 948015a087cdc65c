"""Part II of the course: using a trained model (Chapter 6).

``generate``: autoregressive sampling with temperature and top-k (temperature 0 is
greedy). Chapter 6 adds beam search, nucleus sampling, KV caching and more here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["generate"]


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Append ``max_new_tokens`` sampled tokens to ``idx`` (batch, seq) with ``model``
    (any module mapping (batch, seq) ids to (batch, seq, vocab) logits that has a
    ``config.context_length``).

    Each step feeds the last ``context_length`` tokens, divides the final logits
    by ``temperature`` (0 means greedy: always the most likely token), keeps the
    ``top_k`` largest if given, and samples from the softmax.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.config.context_length :])[:, -1]  # (batch, V)
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)  # (batch, seq + 1)
    model.train(was_training)
    return idx
