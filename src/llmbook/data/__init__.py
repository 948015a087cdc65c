"""Text in, token ids out (Chapters 1 and 2).

Modules, in the order the pipeline runs::

    corpus        the offline corpora Python ships (docstrings, pydoc topics, source)
    hub           load_hub_corpus: an opt-in Hugging Face dataset (online only)
    cleaning      clean_text, exact and near-duplicate removal (MinHash + LSH)
    splits        document-level train/val/test splits; THE course split
    bpe           byte-pair encoding from scratch (Chapter 2)
    tokenization  byte-level BPE with Hugging Face tokenizers; THE course tokenizer
    batching      packing, DataLoader, the random-window sampler training uses
    ngram         n-gram language models with Kneser-Ney smoothing (Chapter 1)
    baselines     the recorded n-gram baseline every later model must beat
    parallel      English -> Chinese parallel pairs, offline (Chapter 9)
    instructions  Chapter 7's instruction pairs (question about a definition, answer)

Everything public is re-exported here: ``from llmbook.data import course_splits``.
"""

from llmbook.data.baselines import (
    NGRAM_BASELINE,
    ngram_baseline_model,
    ngram_baseline_perplexity,
)
from llmbook.data.batching import (
    BlockDataset,
    CourseData,
    course_data,
    make_dataloader,
    pack_blocks,
    window_iterator,
)
from llmbook.data.cleaning import (
    clean_code,
    clean_text,
    dedup_key,
    deduplicate,
    jaccard,
    minhash_signatures,
    near_duplicates,
    remove_near_duplicates,
    shingles,
)
from llmbook.data.corpus import CORPORA, corpus_stats, load_corpus
from llmbook.data.hub import load_hub_corpus
from llmbook.data.instructions import first_sentence, instruction_pairs
from llmbook.data.ngram import NGramLM
from llmbook.data.parallel import load_parallel, parallel_sources
from llmbook.data.splits import (
    Splits,
    compute_course_splits,
    course_splits,
    split_documents,
)
from llmbook.data.tokenization import (
    EOS_TOKEN,
    course_tokenizer,
    encode_docs,
    train_hf_bpe,
)

__all__ = [
    "NGRAM_BASELINE",
    "ngram_baseline_model",
    "ngram_baseline_perplexity",
    "BlockDataset",
    "CourseData",
    "course_data",
    "make_dataloader",
    "pack_blocks",
    "window_iterator",
    "clean_code",
    "clean_text",
    "dedup_key",
    "deduplicate",
    "jaccard",
    "minhash_signatures",
    "near_duplicates",
    "remove_near_duplicates",
    "shingles",
    "CORPORA",
    "corpus_stats",
    "load_corpus",
    "load_hub_corpus",
    "first_sentence",
    "instruction_pairs",
    "NGramLM",
    "load_parallel",
    "parallel_sources",
    "Splits",
    "compute_course_splits",
    "course_splits",
    "split_documents",
    "EOS_TOKEN",
    "course_tokenizer",
    "encode_docs",
    "train_hf_bpe",
]
