"""Filling in a masked token with a masked-language model (Chapter 6, section 8).

A BERT-style encoder predicts a distribution over the vocabulary at *every* position;
the answer to "which word goes here?" is the distribution at the mask's position.
Seed 001 section 5 takes the argmax over all positions and the vocabulary at once,
which returns an index into the flattened (sequence x vocabulary) array; here the
row of the mask is picked first.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fill_mask"]


@torch.no_grad()
def fill_mask(
    model: nn.Module, tokenizer, text: str, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For every mask token in ``text``, the ``top_k`` most likely tokens there and
    their probabilities, most likely first.

    ``model`` maps ids (1, seq) to logits (1, seq, vocab); ``tokenizer`` is a
    ``transformers`` tokenizer with a ``mask_token`` (e.g.
    ``llmbook.model.load_tokenizer("course-mlm")``).
    """
    if tokenizer.mask_token is None:
        raise ValueError("the tokenizer has no mask token")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids = torch.tensor([tokenizer.encode(text)], device=next(model.parameters()).device)
    where = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(where) == 0:
        raise ValueError(f"no {tokenizer.mask_token} in the text: {text!r}")
    was_training = model.training
    model.eval()
    try:
        logits = model(ids)[0, where]  # (n_masks, vocab): the rows of the masks only
    finally:
        model.train(was_training)
    probs, tokens = logits.float().softmax(dim=-1).topk(top_k, dim=-1)
    return [
        [
            (tokenizer.decode([int(t)]), float(p))
            for t, p in zip(row_t, row_p, strict=True)
        ]
        for row_t, row_p in zip(tokens, probs, strict=True)
    ]
