"""Per-lab grading rules that the tests themselves cannot say.

- ``FREE``: leaves (by their source text in the assert, or ``"*"`` for all of a
  test) whose correct values differ from the reference solution's, so only the assert
  itself judges them: random draws (each correct answer draws differently). Such a
  leaf must be what the student's function returned (the filled tensor ``w``), never
  a statistic the test computed from it in the sandbox (``std = w.std().item()``):
  the asserts take their statistics of it on the trusted side, so a student who takes
  over the harness must report outputs that have the right properties, which is the
  question's work. ``"*"`` (a test run whole and judged on the values the sandbox
  reports, which it can fabricate) is for no test in the course: a test whose
  outputs depend on how the student creates layers loads fixed weights into them
  first (Lab 3's SwiGLU and block), and Lab 4's 30 Adam steps reproduce the
  reference's losses well inside the tolerance.
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
        # the sampler's draws: only the filled tensors come from the sandbox, and
        # every statistic the asserts take of them (std, bound, quantiles against
        # torch's trunc_normal_ drawn in the reference run) is computed here
        "test_q3_std_and_bound": frozenset({"out", "w"}),
        "test_q3_written_by_hand": frozenset({"w"}),
        "test_q3_matches_torch_truncated_normal": frozenset({"w"}),
        "test_q3_on_parameters_and_fresh_draws": frozenset(
            {"out", "layer.weight", "first", "second", "small"}
        ),
    },
    "lab06": {
        # A is drawn at random: the matrices come from the sandbox, their bound,
        # spread and freshness are checked here
        "test_q1_initialised_like_peft": frozenset({"a", "fresh"}),
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
