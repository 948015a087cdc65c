"""Applications (Chapter 12).

Modules::

    retrieval     documents, chunking, exact nearest-neighbour search, hit rate, prompts
    rag           the reader tuned to answer from a passage; the four-way evaluation
    chat          chat templates (checked against transformers), multi-turn context
    codecomplete  next-line items and greedy completion with a GPT or an n-gram model
    codemeasures  exact match, edit similarity, next-token and identifier accuracy
    codechecks    doctest and expression checks for model-written code
    sandbox       run_python: untrusted code in a limited, isolated subprocess

Everything public is re-exported here: ``from llmbook.apps import exact_search``.
"""

from llmbook.apps.chat import (
    CHATML,
    COURSE_TEMPLATE,
    ROLES,
    ChatTemplate,
    check_messages,
    fit_to_context,
    reply,
)
from llmbook.apps.codechecks import (
    DoctestTask,
    doctest_check,
    doctest_tasks,
    expression_check,
    verify_exercise,
)
from llmbook.apps.codecomplete import (
    LineItem,
    first_line,
    gpt_line,
    gpt_tokens,
    greedy_line,
    line_prompt,
    next_line_items,
    ngram_next_token,
    rule_tokens,
)
from llmbook.apps.codemeasures import (
    MEASURES,
    Completer,
    LineScores,
    completes_identifier,
    edit_similarity,
    gpt_next_tokens,
    identifier_prompts,
    identifiers,
    item_measures,
    lcs_length,
    line_tokens,
    paired_measures,
    rule_next_tokens,
    score_item,
)
from llmbook.apps.retrieval import (
    INDEX_DIR,
    api_docs,
    build_index,
    chunk_text,
    chunks_digest,
    course_chunks,
    exact_search,
    first_sentence,
    instruction_pairs,
    load_index,
    rag_prompt,
    recall_at_k,
    reciprocal_rank,
    topic_docs,
)
from llmbook.apps.sandbox import ExecResult, isolation_available, run_python
from llmbook.utils import lazy_names

# `rag` is also a command (python -m llmbook.apps.rag): its names load on first
# use (see llmbook.utils.lazy_names)
_FROM_RAG = (
    "MAX_NEW",
    "PROMPT_TOKENS",
    "READER",
    "SYSTEMS",
    "RagEvaluation",
    "ReaderConfig",
    "answer",
    "evaluate",
    "evaluate_reader",
    "held_out_questions",
    "question",
    "reader_examples",
    "relevant_key",
    "train_reader",
)
__getattr__ = lazy_names(__name__, "rag", _FROM_RAG)


__all__ = [
    *_FROM_RAG,
    "CHATML",
    "COURSE_TEMPLATE",
    "ROLES",
    "ChatTemplate",
    "check_messages",
    "fit_to_context",
    "reply",
    "DoctestTask",
    "LineItem",
    "doctest_check",
    "doctest_tasks",
    "expression_check",
    "first_line",
    "verify_exercise",
    "gpt_line",
    "greedy_line",
    "next_line_items",
    "ngram_next_token",
    "rule_tokens",
    "gpt_tokens",
    "lcs_length",
    "edit_similarity",
    "identifiers",
    "identifier_prompts",
    "completes_identifier",
    "line_prompt",
    "line_tokens",
    "gpt_next_tokens",
    "rule_next_tokens",
    "Completer",
    "LineScores",
    "score_item",
    "MEASURES",
    "item_measures",
    "paired_measures",
    "INDEX_DIR",
    "api_docs",
    "build_index",
    "chunk_text",
    "chunks_digest",
    "course_chunks",
    "exact_search",
    "first_sentence",
    "instruction_pairs",
    "load_index",
    "rag_prompt",
    "recall_at_k",
    "reciprocal_rank",
    "topic_docs",
    "ExecResult",
    "isolation_available",
    "run_python",
]
