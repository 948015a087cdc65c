"""Fine-tuning (Chapter 7): adapting a trained model with few trainable parameters.

Modules::

    lora           LoRALinear, apply_lora, merge/unmerge, lora_state_dict
    prompt_tuning  PromptTuning: a learned soft prompt in front of the input
    prefix_tuning  PrefixTuning: learned keys and values in front of every layer's
    dpo            dpo_loss, preference_margin, sequence_log_prob (preferences)
    heads          pooling, SequenceClassifier, SequenceRegressor (linear probes too)
    sft            LoRA instruction tuning: lora_tune, the course-gpt-sft recipe

The three parameter-efficient methods are built from scratch and checked against
``peft`` on the same models and initial values (``tests/unit/finetune/test_finetune.py``).
"""

from llmbook.finetune.dpo import dpo_loss, preference_margin, sequence_log_prob
from llmbook.finetune.heads import SequenceClassifier, SequenceRegressor, pool
from llmbook.finetune.lora import (
    LoRALinear,
    apply_lora,
    count_trainable,
    lora_layers,
    lora_state_dict,
    merge_and_unwrap,
    merge_lora,
    unmerge_lora,
)
from llmbook.finetune.prefix_tuning import PrefixTuning, unflatten_prefix
from llmbook.finetune.prompt_tuning import PromptTuning
from llmbook.utils import lazy_names

# `sft` is also a command (python -m llmbook.finetune.sft): its names load on first
# use (see llmbook.utils.lazy_names)
_FROM_SFT = (
    "SFTConfig",
    "answer_batch",
    "answer_loss",
    "lora_tune",
    "train_sft",
)
__getattr__ = lazy_names(__name__, "sft", _FROM_SFT)


__all__ = [
    *_FROM_SFT,
    "LoRALinear",
    "PrefixTuning",
    "PromptTuning",
    "SequenceClassifier",
    "SequenceRegressor",
    "apply_lora",
    "count_trainable",
    "dpo_loss",
    "lora_layers",
    "lora_state_dict",
    "merge_lora",
    "merge_and_unwrap",
    "pool",
    "preference_margin",
    "sequence_log_prob",
    "unflatten_prefix",
    "unmerge_lora",
]
