"""Responsible AI (Chapter 13): measuring bias, memorisation, filters,
attributions and cost on the course's own models.

Modules::

    weat          the Word Embedding Association Test: effect size, permutation p
    memorization  canaries, log-perplexity of sequences, exposure (secret sharer)
    filters       a pattern-based input/output filter, normalisation, evasions
    attribution   residual stream, gradient x input, integrated gradients, logit lens
    footprint     training FLOPs to time, energy and CO2e under stated assumptions
    strings       string-literal spans of Python source, the same on every Python
"""

from llmbook.responsible.attribution import (
    gradient_x_input,
    integrated_gradients,
    logit_lens,
    logits_from_embeddings,
    residual_stream,
)
from llmbook.responsible.filters import (
    EVASIONS,
    SECRET_PATTERNS,
    UNSAFE_CODE_PATTERNS,
    PatternFilter,
    normalize,
)
from llmbook.responsible.footprint import (
    Footprint,
    Hardware,
    footprint_from_flops,
    footprint_from_time,
    training_flops,
)
from llmbook.responsible.memorization import (
    canary_rank,
    exposure,
    random_secrets,
    sequence_log_perplexity,
)
from llmbook.responsible.weat import (
    WEATResult,
    association,
    weat_effect_size,
    weat_statistic,
    weat_test,
)

__all__ = [
    "EVASIONS",
    "Footprint",
    "Hardware",
    "PatternFilter",
    "SECRET_PATTERNS",
    "UNSAFE_CODE_PATTERNS",
    "WEATResult",
    "association",
    "canary_rank",
    "exposure",
    "footprint_from_flops",
    "footprint_from_time",
    "gradient_x_input",
    "integrated_gradients",
    "logit_lens",
    "logits_from_embeddings",
    "normalize",
    "random_secrets",
    "residual_stream",
    "sequence_log_perplexity",
    "training_flops",
    "weat_effect_size",
    "weat_statistic",
    "weat_test",
]
