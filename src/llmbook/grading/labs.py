"""Per-lab grading rules that the tests themselves cannot say.

- ``FREE``: leaves (by their source text in the assert, or ``"*"`` for all of a
  test) whose correct values differ from the reference solution's, so only the assert
  itself judges them: random initialisations (each correct answer draws differently),
  modules whose weights depend on the order a student creates layers in, timings.
- ``FORBIDDEN``: per question, the library functions or classes an answer must not
  call (matched by name: an attribute ``F.scaled_dot_product_attention``, a name
  imported as ``from torch.optim import Adam``, or the name as a string). Any use of
  the ``llmbook`` package in an answer is flagged as well, in every lab.

Labs are keyed by their number (``lab02``), so renamed labs keep their rules.
"""

from __future__ import annotations

__all__ = ["FORBIDDEN", "FREE", "forbidden_names", "free_leaves", "lab_key"]

ALL = "*"

FREE: dict[str, dict[str, str | frozenset[str]]] = {
    "lab03": {
        # SwiGLU, the initialisation and the block: weights depend on how the student
        # creates and fills them; the asserts compare with torch on those same
        # weights, here.
        "test_q2_layers_and_shape": ALL,
        "test_q2_matches_reference": ALL,
        "test_q2_batch_odd_sizes_and_gradients": ALL,
        "test_q3_std_and_bound": ALL,
        "test_q3_written_by_hand": ALL,
        "test_q3_matches_torch_truncated_normal": ALL,
        "test_q3_on_parameters_and_fresh_draws": ALL,
        "test_q4_parts_and_shape": ALL,
        "test_q4_matches_reference": ALL,
        "test_q4_batch_odd_length_and_eps": ALL,
        "test_q4_causal_does_not_leak": ALL,
        "test_q4_residual_around_normalised_sublayers": ALL,
        "test_q4_gradients_and_default_width": ALL,
    },
    "lab04": {
        # 30 Adam steps amplify rounding: the assert (loss halves) is the judge
        "test_q4_memorises_a_batch": ALL,
    },
    "lab06": {
        # A is drawn at random: each correct layer draws its own
        "test_q1_initialised_like_peft": ALL,
    },
}

SOFTMAX = frozenset({"softmax", "log_softmax", "Softmax", "softmin"})
ATTENTION = frozenset(
    {
        "scaled_dot_product_attention",
        "MultiheadAttention",
        "multi_head_attention_forward",
    }
)

TORCH_QUANT = frozenset(
    {
        "quantize_per_tensor",
        "quantize_per_channel",
        "quantize_per_tensor_dynamic",
        "fake_quantize_per_tensor_affine",
        "fake_quantize_per_channel_affine",
        "quantize_dynamic",
        "int_repr",
        "dequantize",
    }
)

# lab06: LoRA by hand, not peft's (the package, its config and its layers)
PEFT = frozenset(
    {"peft", "LoraConfig", "LoraModel", "get_peft_model", "PeftModel", "LoraLayer"}
)

FORBIDDEN: dict[str, dict[str, frozenset[str]]] = {
    "lab09": {
        "q1": TORCH_QUANT,
        "q2": TORCH_QUANT,
        "q3": TORCH_QUANT | frozenset({"DynamicQuantizedLinear"}),
    },
    "lab01": {
        "q1": frozenset({"nltk", "tokenizers", "BpeTrainer"}),
        "q2": frozenset({"nltk", "tokenizers", "BPE", "BpeTrainer"}),
        "q3": frozenset({"tokenizers", "WordPiece", "BertTokenizer"}),
        "q4": frozenset({"nltk", "WittenBellInterpolated", "NGramLM"}),
    },
    "lab02": {
        "q2": SOFTMAX,
        "q4": SOFTMAX | ATTENTION,
        "q5": SOFTMAX | ATTENTION,
    },
    "lab03": {
        "q1": frozenset({"rms_norm", "RMSNorm", "LlamaRMSNorm"}),
        "q2": frozenset({"LlamaMLP"}),
        "q3": frozenset({"trunc_normal_", "kaiming_normal_", "xavier_normal_"}),
        "q4": frozenset({"LlamaDecoderLayer", "TransformerEncoderLayer"}),
        "q5": frozenset({"LlamaForCausalLM", "LlamaModel", "LlamaConfig"}),
    },
    "lab04": {
        "q1": frozenset({"Adam", "AdamW"}),
        "q2": frozenset(
            {"get_cosine_schedule_with_warmup", "CosineAnnealingLR", "LambdaLR"}
        ),
        "q3": frozenset({"clip_grad_norm_", "clip_grad_value_"}),
    },
    "lab05": {
        "q1": frozenset({"EtaLogitsWarper", "LogitsProcessorList"}),
        "q2": frozenset({"generate", "beam_search", "_beam_search", "GenerationMixin"}),
    },
    "lab06": {
        "q1": PEFT,
        "q2": PEFT | frozenset({"merge_and_unload", "merge_adapter"}),
        "q3": PEFT | frozenset({"inject_adapter_in_model"}),
    },
    "lab08": {
        "q1": frozenset({"MixtralTopKRouter", "MixtralSparseMoeBlock"}),
        "q2": frozenset({"MixtralSparseMoeBlock", "SwitchTransformersSparseMLP"}),
        "q3": frozenset(
            {
                "MixtralSparseMoeBlock",
                "MixtralExperts",
                "SwitchTransformersSparseMLP",
                "SwitchTransformersExperts",
                "SwitchTransformersTop1Router",
            }
        ),
    },
    "lab07": {
        "q1": frozenset({"CrossEntropyLoss", "cross_entropy", "nll_loss"}),
        "q2": frozenset({"bootstrap", "bootstrap_ci"}),
        "q3": frozenset(
            {"CountVectorizer", "TfidfVectorizer", "HashingVectorizer", "ngrams"}
        ),
        "q4": frozenset(
            {
                "f1_score",
                "fbeta_score",
                "precision_recall_fscore_support",
                "precision_score",
                "recall_score",
                "classification_report",
                "multilabel_confusion_matrix",
            }
        ),
    },
}


def lab_key(lab: str) -> str:
    """``lab02_attention`` -> ``lab02``."""
    return lab.split("_", 1)[0]


def free_leaves(lab: str, test: str) -> str | frozenset[str]:
    """``"*"`` when every leaf of `test` is free, else the free leaves' source texts."""
    return FREE.get(lab_key(lab), {}).get(test, frozenset())


def forbidden_names(lab: str, question: str) -> frozenset[str]:
    return FORBIDDEN.get(lab_key(lab), {}).get(question, frozenset())
