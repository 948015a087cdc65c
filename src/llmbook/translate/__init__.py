"""English -> Chinese translation with the Chapter 4 encoder-decoder (Chapter 9).

    python -m llmbook.translate --out DIR [--steps N] [--target chars|bpe]
    python -m llmbook.translate --evaluate course-mt

The first trains the course's translation model on the shipped parallel snapshot
(:mod:`llmbook.data.parallel`) and writes it to ``DIR``; the second scores a saved
model (shipped: ``course-mt``) on the held-out sentence-level test sources against
the copy and dictionary baselines. The pieces:

* :mod:`llmbook.translate.model`: tokenisers (an English BPE; Chinese characters or
  BPE), the model, its loss, greedy and beam decoding, cross-attention maps;
* :mod:`llmbook.translate.training`: training with a fixed step budget, save, load;
* :mod:`llmbook.translate.scoring`: BLEU with sacrebleu's ``zh`` tokeniser, the
  baselines, the test set, per-catalog scores and the paired bootstrap.
"""

from llmbook.translate.model import (
    DecoderAsLM,
    MTConfig,
    SourceTokenizer,
    ZhBPE,
    beam_translate,
    build_model,
    cross_attention,
    encode_batch,
    greedy_translate,
    mt_loss,
)
from llmbook.translate.scoring import (
    DictionaryBaseline,
    copy_baseline,
    corpus_bleu_zh,
    evaluate_mt,
    sample_sources,
    score_outputs,
    tokenize_zh,
    verdict_line,
    verdict_pairs,
)
from llmbook.translate.training import build_tokenizers, load_mt, save_mt, train_mt

__all__ = [
    "MTConfig",
    "SourceTokenizer",
    "ZhBPE",
    "build_model",
    "encode_batch",
    "mt_loss",
    "greedy_translate",
    "DecoderAsLM",
    "beam_translate",
    "cross_attention",
    "tokenize_zh",
    "corpus_bleu_zh",
    "copy_baseline",
    "DictionaryBaseline",
    "verdict_pairs",
    "sample_sources",
    "score_outputs",
    "evaluate_mt",
    "verdict_line",
    "build_tokenizers",
    "train_mt",
    "save_mt",
    "load_mt",
]
