"""Using a trained model: decoding (Chapter 6).

Modules:

- ``processors``: what happens to the logits before a token is chosen
  (temperature, top-k, top-p, min-p, repetition penalty; ``SamplingConfig``);
- ``sampling``: the generation loop, greedy or sampled, as a stream of tokens
  (``stream``, ``stream_text``) or all at once (``generate``);
- ``kv_cache``: the key-value cache (``KVCache``, ``forward_with_cache``);
- ``beam``: beam search with length penalty and end-of-sequence handling;
- ``speculative``: speculative decoding with a draft model;
- ``masked``: fill-mask with a masked-language model.

Each is checked against ``transformers`` in ``tests/unit/decoding/test_decoding.py``.
"""

from llmbook.decoding.beam import beam_search
from llmbook.decoding.kv_cache import KVCache, cache_bytes, forward_with_cache
from llmbook.decoding.masked import fill_mask
from llmbook.decoding.processors import (
    SamplingConfig,
    apply_temperature,
    min_p_filter,
    process_logits,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from llmbook.decoding.sampling import choose_next, generate, stream, stream_text
from llmbook.decoding.speculative import (
    SpeculativeStats,
    accept_or_resample,
    speculative_generate,
)

__all__ = [
    "KVCache",
    "SamplingConfig",
    "SpeculativeStats",
    "accept_or_resample",
    "apply_temperature",
    "beam_search",
    "cache_bytes",
    "choose_next",
    "fill_mask",
    "forward_with_cache",
    "generate",
    "min_p_filter",
    "process_logits",
    "repetition_penalty",
    "speculative_generate",
    "stream",
    "stream_text",
    "top_k_filter",
    "top_p_filter",
]
