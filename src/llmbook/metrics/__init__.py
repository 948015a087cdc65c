"""Evaluation (Chapter 8).

Modules::

    classification     accuracy, precision, recall, F1 (micro/macro), confusion matrix
    bleu               the 13a tokenizer and BLEU, equal to sacrebleu's default
    overlap            chrF (= sacrebleu) and ROUGE-1/2/L (= rouge-score)
    language_modeling  perplexity per token and per word, bits per byte, batched
                       scoring of token sequences on any device
    statistics         bootstrap intervals, paired bootstrap, permutation test,
                       Cohen's kappa, sample sizes
    harness            multiple-choice tasks scored by log-likelihood
    contamination      n-gram overlap between evaluation items and training text

Every metric is checked against its reference library on random inputs in
``tests/unit/metrics/test_metrics.py``. Everything public is re-exported here:
``from llmbook.metrics import corpus_bleu``.
"""

from llmbook.metrics.bleu import (
    BLEUStats,
    bleu_from_stats,
    bleu_stats,
    corpus_bleu,
    ngram_counts,
    sentence_bleu,
    tokenize_13a,
)
from llmbook.metrics.classification import (
    accuracy,
    confusion_matrix,
    f1_score,
    precision_recall_f1,
)
from llmbook.metrics.contamination import NGramIndex, ngram_set, overlap_fraction, words
from llmbook.metrics.harness import (
    CausalLMScorer,
    MCItem,
    NGramScorer,
    Scorer,
    docstring_task,
    evaluate_multiple_choice,
    next_line_task,
)
from llmbook.metrics.language_modeling import (
    LMScore,
    bits_per_byte,
    perplexity,
    score_sequences,
    sliding_windows,
    target_log_probs,
    text_counts,
)
from llmbook.metrics.overlap import (
    PRF,
    chrf_from_stats,
    chrf_stats,
    corpus_chrf,
    lcs_length,
    rouge,
    rouge_l,
    rouge_n,
    rouge_tokenize,
    sentence_chrf,
)
from llmbook.metrics.statistics import (
    PairedResult,
    bootstrap_ci,
    cohen_kappa,
    examples_needed,
    paired_bootstrap,
    paired_t_interval,
    permutation_test,
)

__all__ = [
    "BLEUStats",
    "bleu_from_stats",
    "bleu_stats",
    "corpus_bleu",
    "ngram_counts",
    "sentence_bleu",
    "tokenize_13a",
    "accuracy",
    "confusion_matrix",
    "f1_score",
    "precision_recall_f1",
    "NGramIndex",
    "ngram_set",
    "overlap_fraction",
    "words",
    "CausalLMScorer",
    "MCItem",
    "NGramScorer",
    "Scorer",
    "docstring_task",
    "evaluate_multiple_choice",
    "next_line_task",
    "LMScore",
    "bits_per_byte",
    "perplexity",
    "score_sequences",
    "target_log_probs",
    "sliding_windows",
    "text_counts",
    "PRF",
    "chrf_from_stats",
    "chrf_stats",
    "corpus_chrf",
    "lcs_length",
    "rouge",
    "rouge_l",
    "rouge_n",
    "rouge_tokenize",
    "sentence_chrf",
    "PairedResult",
    "bootstrap_ci",
    "cohen_kappa",
    "examples_needed",
    "paired_bootstrap",
    "paired_t_interval",
    "permutation_test",
]
