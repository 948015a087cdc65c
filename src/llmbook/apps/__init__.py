"""Applications (Chapter 12).

Modules::

    rag           chunking, exact nearest-neighbour search, recall@k, RAG prompts
    chat          chat templates (checked against transformers), multi-turn context
    codecomplete  next-line completion with a GPT or an n-gram model, scored by
                  exact match, edit similarity, next-token and identifier accuracy;
                  doctest and expression checks for model-written code
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
from llmbook.apps.codecomplete import (
    MEASURES,
    Completer,
    DoctestTask,
    LineItem,
    LineScores,
    completes_identifier,
    doctest_check,
    doctest_tasks,
    edit_similarity,
    expression_check,
    first_line,
    gpt_line,
    gpt_next_tokens,
    gpt_tokens,
    greedy_line,
    identifier_prompts,
    identifiers,
    item_measures,
    lcs_length,
    line_tokens,
    next_line_items,
    ngram_next_token,
    paired_measures,
    rule_next_tokens,
    rule_tokens,
    score_item,
    verify_exercise,
)
from llmbook.apps.rag import (
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

__all__ = [
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
