"""Token-by-token generation: greedy and sampled, with or without a KV cache, as a
stream or all at once (Chapter 6, sections 2-6).

:func:`stream` is the one generation loop; :func:`generate` collects what it yields
and :func:`stream_text` decodes it into text as it arrives. With the same settings
they pick the same tokens as ``transformers``' ``generate`` on the model exported
with :func:`llmbook.model.to_hf_gpt2` -- and, when sampling from the global random
stream (no ``generator``) after the same ``torch.manual_seed``, the same draws
(``tests/unit/decoding/test_decoding.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from llmbook.decoding.kv_cache import KVCache, forward_with_cache
from llmbook.decoding.processors import SamplingConfig, process_logits

__all__ = ["choose_next", "generate", "stream", "stream_text"]


def choose_next(
    logits: Tensor,
    ids: Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The next token (batch,) from last-position logits (batch, vocab): the argmax
    when greedy, else a draw from the softmax of the processed logits."""
    logits = process_logits(logits.float(), ids, config)
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def stream(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    config: SamplingConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> Iterator[Tensor]:
    """Yield the next token of every sequence, (batch,), ``max_new_tokens`` times or
    until every sequence has produced ``eos_id`` (a finished sequence then gets
    ``eos_id`` again, as padding).

    ``model`` maps (batch, seq) ids to (batch, seq, vocab) logits and has a
    ``config.context_length``; ``idx`` (batch, seq) holds equally long prompts.
    With ``use_cache`` (a GPT) only the new token runs through the model at each
    step (a model whose ``supports_kv_cache`` is False, such as a hub model from
    :func:`llmbook.model.hub.load_causal_lm`, always runs uncached); once the
    sequence outgrows the context, every step reruns the last ``context_length``
    tokens, as without the cache, so the tokens are the same.
    """
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(
            f"idx must be (batch, seq) with seq >= 1, got {tuple(idx.shape)}"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    config = SamplingConfig() if config is None else config
    # a hub model (llmbook.model.hub.HubCausalLM) takes no course KVCache: rerun
    use_cache = use_cache and getattr(model, "supports_kv_cache", True)
    context = model.config.context_length
    was_training = model.training
    model.eval()
    ids, cache = idx, None
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    try:
        for _ in range(max_new_tokens):
            if use_cache and ids.shape[1] <= context:
                if cache is None:
                    cache = KVCache(model, ids.shape[0])
                    logits = forward_with_cache(model, ids, cache)[:, -1]
                else:
                    logits = forward_with_cache(model, ids[:, -1:], cache)[:, -1]
            else:
                logits = model(ids[:, -context:])[:, -1]  # (batch, vocab)
            nxt = choose_next(logits, ids, config, generator)  # (batch,)
            if eos_id is not None:
                nxt = nxt.masked_fill(finished, eos_id)
                finished |= nxt == eos_id
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            yield nxt
            if eos_id is not None and bool(finished.all()):
                return
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    *,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> Tensor:
    """``idx`` (batch, seq) followed by up to ``max_new_tokens`` generated tokens.

    ``temperature=0`` is greedy decoding; otherwise each token is drawn from the
    softmax of the logits after :func:`~llmbook.decoding.processors.process_logits`
    (repetition penalty, temperature, top-k, top-p, min-p), with ``generator`` or
    the global random stream. See :func:`stream` for ``eos_id`` and ``use_cache``.
    """
    config = SamplingConfig(temperature, top_k, top_p, min_p, repetition_penalty)
    new = list(
        stream(
            model,
            idx,
            max_new_tokens,
            config,
            generator=generator,
            eos_id=eos_id,
            use_cache=use_cache,
        )  # fmt: skip
    )
    if not new:
        return idx
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1)


def stream_text(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    config: SamplingConfig | None = None,
    **kwargs,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` as text, piece by piece, as tokens are
    generated (one sequence). ``tokenizer`` has ``encode(str) -> list[int]`` and
    ``decode(list[int]) -> str`` (a ``PreTrainedTokenizerFast`` does).

    A byte-level token can end in the middle of a UTF-8 character; such a piece
    decodes to U+FFFD and is held back until the character is complete.
    """
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], device=device)
    new: list[int] = []
    sent = 0
    for token in stream(model, idx, max_new_tokens, config, **kwargs):
        new.append(int(token))
        text = tokenizer.decode(new)
        if text.endswith("\ufffd"):
            continue
        yield text[sent:]
        sent = len(text)
