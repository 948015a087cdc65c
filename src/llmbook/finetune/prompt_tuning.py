"""Prompt tuning (Lester et al., 2021), built from scratch (Chapter 7).

The model stays frozen; what trains is a "soft prompt": ``n_virtual`` vectors of size
d_model placed in front of the token embeddings, as if the input began with
``n_virtual`` tokens that have no row in the vocabulary. Only
``n_virtual * d_model`` numbers train.

Conventions (the same as ``peft``'s ``PeftModelForCausalLM`` with a
``PromptTuningConfig``, which ``tests/unit/finetune/test_finetune.py`` checks within 1e-5):

* the virtual tokens take positions ``0 .. n_virtual - 1`` (they get the position
  embeddings of those positions added, like any token); the real tokens follow, so
  ``n_virtual + seq`` must fit in the model's ``context_length``;
* the logits of *all* positions are returned, virtual ones included:
  (batch, n_virtual + seq, vocab); ``logits[:, n_virtual:]`` are the real tokens'.
  :meth:`PromptTuning.real_logits` drops the virtual positions for you;
* the virtual tokens are never padding: an ``attention_mask`` for the real tokens is
  extended with ones in front.

It works with the course :class:`~llmbook.model.GPT` and any model whose forward
takes ``inputs_embeds`` and ``attention_mask`` like it (and has ``tok_emb``):
the soft prompt goes in front of the token embeddings and the model adds positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from llmbook.model.validation import check_ids

__all__ = ["PromptTuning", "check_attention_mask"]


def check_attention_mask(attention_mask: Tensor | None, idx: Tensor) -> None:
    """Raise a clear error unless ``attention_mask`` is None or a (batch, seq)
    tensor of 1s (token) and 0s (padding) shaped like ``idx``."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, Tensor):
        raise TypeError(
            "attention_mask must be a (batch, seq) tensor of 1s and 0s, got "
            f"{type(attention_mask).__name__}"
        )
    if attention_mask.shape != idx.shape:
        raise ValueError(
            f"attention_mask must have the shape of idx {tuple(idx.shape)} "
            f"(1 = token, 0 = padding), got {tuple(attention_mask.shape)}"
        )


class PromptTuning(nn.Module):
    """A frozen causal LM with ``n_virtual_tokens`` learned input embeddings in front.

    ``prompt``: the trainable (n_virtual_tokens, d_model) soft prompt. Initialised
    from the embeddings of ``init_ids`` (token ids, repeated or cut to
    ``n_virtual_tokens``; the paper finds this trains better) or, when
    ``init_ids`` is None, from N(0, 1) like ``peft``'s default (``RANDOM``).

    ``model``'s own parameters are frozen in place (``requires_grad = False``).
    forward(idx (batch, seq), attention_mask (batch, seq) or None)
    -> logits (batch, n_virtual_tokens + seq, vocab_size).
    """

    def __init__(
        self,
        model: nn.Module,
        n_virtual_tokens: int,
        init_ids: Tensor | list[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(n_virtual_tokens, int) or n_virtual_tokens < 1:
            raise ValueError(
                f"n_virtual_tokens must be a positive integer, got {n_virtual_tokens!r}"
            )
        cfg = model.config
        if n_virtual_tokens >= cfg.context_length:
            raise ValueError(
                f"n_virtual_tokens={n_virtual_tokens} leaves no room for real tokens "
                f"in context_length={cfg.context_length}"
            )
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.n_virtual_tokens = n_virtual_tokens
        emb = model.tok_emb.weight  # (vocab_size, d_model)
        if init_ids is None:
            init = torch.randn(n_virtual_tokens, cfg.d_model, device=emb.device)
        else:
            ids = torch.as_tensor(init_ids, dtype=torch.long, device=emb.device)
            if ids.dim() != 1 or ids.numel() == 0:
                raise ValueError(
                    f"init_ids must be a non-empty 1-D list of token ids, got shape "
                    f"{tuple(ids.shape)}"
                )
            if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
                raise ValueError(
                    f"init_ids hold ids outside the vocabulary [0, {cfg.vocab_size})"
                )
            reps = -(-n_virtual_tokens // ids.numel())  # ceil division
            init = emb.detach()[ids.repeat(reps)[:n_virtual_tokens]].clone()
        self.prompt = nn.Parameter(init.to(emb.dtype))  # (n_virtual, d_model)

    @property
    def config(self) -> Any:
        """The wrapped model's config."""
        return self.model.config

    def embed(self, idx: Tensor) -> Tensor:
        """[soft prompt; token embeddings], without positions (the model adds those
        of 0 .. n_virtual + seq - 1): (batch, seq) -> (batch, n_virtual + seq, d)."""
        cfg, n_v = self.model.config, self.n_virtual_tokens
        if idx.dim() == 2 and n_v + idx.shape[1] > cfg.context_length:
            raise ValueError(
                f"{idx.shape[1]} tokens after {n_v} virtual tokens exceed "
                f"context_length={cfg.context_length}"
            )
        check_ids("idx", idx, cfg.vocab_size, cfg.context_length)
        prompt = self.prompt.unsqueeze(0).expand(
            idx.shape[0], -1, -1
        )  # (batch, n_v, d)
        return torch.cat([prompt, self.model.tok_emb(idx)], dim=1)

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        check_attention_mask(attention_mask, idx)
        if attention_mask is not None:  # the virtual tokens are never padding
            ones = attention_mask.new_ones(idx.shape[0], self.n_virtual_tokens)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        return self.model(inputs_embeds=self.embed(idx), attention_mask=attention_mask)

    def real_logits(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits of the real tokens only: (batch, seq, vocab_size)."""
        return self(idx, attention_mask)[:, self.n_virtual_tokens :]
