"""Retrieval-augmented answering (Chapter 12): a reader that uses its passage, and
the evaluation of the whole system.

Retrieval itself (documents, chunks, MiniLM search, hit rate, prompts) is
:mod:`llmbook.apps.retrieval`. This module adds the generator's
half. ``course-gpt-sft`` (Chapter 7) was tuned on bare questions, so a passage in its
prompt is only more text to continue; the *reader* ``course-gpt-rag`` is that model
LoRA-tuned on the training split's questions with a passage in front of most of
them (:class:`ReaderConfig`): the definition's own chunk for 60% (copy from it), a
random chunk for 20% (ignore it) and none for 20% (answer closed book), with Chapter
7's answer-only loss; 30% of them are asked "Which module defines `name`?" instead,
whose answer (the module) a passage holds in its title, not in its first sentence.
Commands::

    python -m llmbook.apps.rag --out DIR                 embed the chunks (docs-index)
    python -m llmbook.apps.rag --train-reader --out DIR  tune the reader (course-gpt-rag)
    python -m llmbook.apps.rag --evaluate                score the shipped reader

``--evaluate`` answers every held-out question (Chapter 7's held-out definitions that
have a relevant chunk) four ways, first asked for the module (a line that starts
``rag module questions``, the same fields), then asked what it does, and ends with
one line::

    rag closed-book chrF A, with retrieval B, oracle passage C, extractive D; B-A L..H; N questions

A: the reader with the question only; B: with MiniLM's top chunk; C: with a relevant
chunk (retrieval cannot fail); D: no generator, the first sentence of the top chunk.
L..H is the 95% paired bootstrap interval of B - A over the questions' sentence chrF.
The references are the first sentence of each definition's docstring, and a chunk
starts with that sentence after its title, so D equals the reference whenever
retrieval is right: D measures the retriever, not answering. For the module
questions the same D answers with a sentence, so it shows what the rule is worth
on a question it was not made for.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from llmbook.apps.retrieval import (
    build_index,
    course_chunks,
    exact_search,
    first_sentence,
    instruction_pairs,
    load_index,
    rag_prompt,
)
from llmbook.decoding import generate
from llmbook.finetune.sft import SFTConfig, lora_tune, question
from llmbook.metrics import PairedResult, corpus_chrf, paired_bootstrap, sentence_chrf
from llmbook.model.pretrained import (
    from_pretrained,
    load_tokenizer,
    save_pretrained,
    saved_tokenizer,
)

__all__ = [
    "READER",
    "MAX_NEW",
    "PROMPT_TOKENS",
    "ReaderConfig",
    "question",
    "relevant_key",
    "held_out_questions",
    "reader_examples",
    "module_question",
    "module_of",
    "module_questions",
    "train_reader",
    "answer",
    "RagEvaluation",
    "SYSTEMS",
    "evaluate",
    "evaluate_reader",
    "main",
]

#: the shipped reader (``python -m llmbook.apps.rag --train-reader``)
READER = "course-gpt-rag"
#: answer tokens the prompt leaves room for, of the 128-token window
MAX_NEW = 32
#: the longest prompt (passage and question), in tokens
PROMPT_TOKENS = 128 - MAX_NEW


def relevant_key(sentence: str) -> str:
    """What a chunk must contain to be relevant: the sentence's first 50 characters,
    whitespace normalised (a chunk may cut the sentence after that)."""
    return " ".join(sentence.split())[:50]


def _with_chunk(
    pairs: Sequence[tuple[str, str]], chunks: Sequence[str]
) -> list[tuple[str, str, set[int]]]:
    """(name, reference, relevant chunk ids) for the pairs that have a relevant chunk."""
    found = [
        (name, ref, {i for i, c in enumerate(chunks) if relevant_key(ref) in c})
        for name, ref in pairs
    ]
    return [item for item in found if item[2]]


def held_out_questions(chunks: Sequence[str]) -> list[tuple[str, str, set[int]]]:
    """Chapter 7's held-out pairs that have a relevant chunk: (name, reference, ids)."""
    return _with_chunk(instruction_pairs()[1], chunks)


def module_question(name: str) -> str:
    """The second question type: its answer is a module's name, which a passage
    holds in its title (``module.Class.name: ...``), not in its first sentence."""
    return f"Which module defines `{name}`?\n"


def module_of(chunk: str) -> str | None:
    """The module a chunk of API documentation belongs to: the longest proper prefix
    of its title (``email.message.Message.set_type`` -> ``email.message``) that is a
    module of the corpus; None for a chunk of the language reference."""
    from llmbook.data.corpus import STDLIB_MODULES

    parts = chunk.split(": ", 1)[0].split(".")
    for n in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:n]) in STDLIB_MODULES:
            return ".".join(parts[:n])
    return None


def module_questions(
    questions: Sequence[tuple[str, str, set[int]]], chunks: Sequence[str]
) -> list[tuple[str, str, set[int]]]:
    """(name, module, relevant ids) for the `questions` that have a relevant chunk
    titled with the definition itself (``module.name`` or ``module.Class.name``; a
    chunk can be relevant through a docstring another definition shares); relevant:
    those chunks."""
    out = []
    for name, _, relevant in questions:
        own = {i for i in relevant if chunks[i].split(": ", 1)[0].endswith("." + name)}
        module = module_of(chunks[min(own)]) if own else None
        if module is not None:
            out.append(
                (name, module, {i for i in own if module_of(chunks[i]) == module})
            )
    return out


@dataclass(frozen=True)
class ReaderConfig(SFTConfig):
    """How ``course-gpt-rag`` is tuned from ``course-gpt-sft``: a longer LoRA run of
    higher rank than the SFT's, on examples as long as the model's window, and which
    passage each training question gets."""

    steps: int = 700
    batch_size: int = 16
    warmup_steps: int = 20
    weight_decay: float = 0.01
    r: int = 16
    alpha: float = 32
    max_tokens: int = 128
    gold_share: float = 0.6  # the definition's own chunk: learn to copy
    random_share: float = 0.2  # a random chunk: learn to ignore it; the rest: none
    module_share: float = 0.3  # asked "Which module defines ...?" instead

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.gold_share + self.random_share <= 1:
            raise ValueError(
                f"gold_share + random_share must be in [0, 1], got "
                f"{self.gold_share} + {self.random_share}"
            )
        if not 0 <= self.module_share <= 1:
            raise ValueError(f"module_share must be in [0, 1], got {self.module_share}")


def reader_examples(
    chunks: Sequence[str],
    encode: Callable[[str], list[int]],
    config: ReaderConfig,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """(prompt, answer) training examples from the *training* pairs (Chapter 7's
    split), each with its gold chunk, a random chunk or no passage, and for
    ``module_share`` of those whose gold chunk names a module the module question
    with the module as the answer (see the config)."""
    rng = random.Random(config.seed)
    pairs = instruction_pairs()[0] if pairs is None else pairs
    examples = []
    for name, ref, relevant in _with_chunk(pairs, chunks):
        u = rng.random()
        if u < config.gold_share:
            passages = [chunks[min(relevant)]]
        elif u < config.gold_share + config.random_share:
            passages = [chunks[rng.randrange(len(chunks))]]
        else:
            passages = []
        ask, answer_text = question(name), ref
        own = module_questions([(name, ref, relevant)], chunks)
        if rng.random() < config.module_share and own:
            ask, answer_text = module_question(name), own[0][1]
            if u < config.gold_share:  # the chunk that names the definition
                passages = [chunks[min(own[0][2])]]
        examples.append((rag_prompt(ask, passages, encode, PROMPT_TOKENS), answer_text))
    return examples


def train_reader(
    out_dir: Path, config: ReaderConfig = ReaderConfig(), progress: bool = True
) -> Path:
    """Tune ``course-gpt-sft`` into the reader with LoRA, merge the adapters and save
    it with :func:`~llmbook.model.save_pretrained` in `out_dir`."""
    tokenizer = load_tokenizer("course-gpt-sft")
    chunks = [c for _, c in course_chunks()]
    examples = reader_examples(chunks, tokenizer.encode, config)
    model, losses, seconds = lora_tune(
        from_pretrained("course-gpt-sft"), examples, tokenizer, config,
        progress=progress, desc="reader",
    )  # fmt: skip
    ev = evaluate_reader(model, progress)
    meta = {
        "results": {
            "made_by": "python -m llmbook.apps.rag --train-reader --out DIR",
            "reader_config": asdict(config),
            "train_examples": len(examples),
            "train_seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "answer_loss_first_last_50": [
                round(sum(losses[:50]) / len(losses[:50]), 4),
                round(sum(losses[-50:]) / len(losses[-50:]), 4),
            ],
            "evaluate_line": ev.line(),
            "module_line": ev.modules.line("rag module questions"),
            "module_chrf": {k: round(v, 4) for k, v in ev.modules.chrf.items()},
            "chrf": {k: round(v, 4) for k, v in ev.chrf.items()},
        }
    }
    return save_pretrained(
        model.eval(), out_dir, meta, saved_tokenizer("course-gpt-sft")
    )


@torch.no_grad()
def answer(model: nn.Module, tokenizer, prompt: str) -> str:
    """The model's greedy answer to `prompt`, up to :data:`MAX_NEW` tokens or its
    end-of-text token."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    out = generate(model, ids, MAX_NEW, temperature=0.0, eos_id=tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, ids.shape[1] :].tolist())
    return text.split(tokenizer.eos_token)[0].strip()


@dataclass
class RagEvaluation:
    """Answers and scores of the four systems on the same questions."""

    references: list[str]
    answers: dict[str, list[str]]
    chrf: dict[str, float] = field(default_factory=dict)
    per_question: dict[str, list[float]] = field(default_factory=dict)
    gain: PairedResult | None = None  # retrieval minus closed book, per-question chrF
    modules: RagEvaluation | None = None  # the module questions (evaluate_reader)

    def line(self, label: str = "rag") -> str:
        """The evaluation's one-line summary (``--evaluate`` prints it)."""
        c, g = self.chrf, self.gain
        return (
            f"{label} closed-book chrF {c['closed book']:.1f}, with retrieval "
            f"{c['retrieval']:.1f}, oracle passage {c['oracle passage']:.1f}, "
            f"extractive {c['extractive']:.1f}; B-A {g.low:.1f}..{g.high:.1f}; "
            f"{len(self.references)} questions"
        )


SYSTEMS = ("closed book", "retrieval", "oracle passage", "extractive")


def evaluate(
    reader: nn.Module,
    tokenizer,
    chunks: Sequence[str],
    questions: Sequence[tuple[str, str, set[int]]],
    top_chunk: Sequence[int],
    progress: bool = True,
    ask: Callable[[str], str] = question,
) -> RagEvaluation:
    """Answer every question four ways (see the module docstring) and score them
    against the references with chrF (corpus and per question). `ask` turns a name
    into the question (:func:`question`, or :func:`module_question` for the module
    questions of :func:`module_questions`)."""
    from tqdm.auto import tqdm

    if len(top_chunk) != len(questions):
        raise ValueError(
            f"{len(questions)} questions but {len(top_chunk)} retrieved chunks"
        )
    answers: dict[str, list[str]] = {s: [] for s in SYSTEMS}
    for (name, _, relevant), top in zip(
        tqdm(questions, desc="answering", disable=not progress), top_chunk, strict=True
    ):
        q, retrieved, gold = ask(name), chunks[top], chunks[min(relevant)]
        answers["closed book"].append(answer(reader, tokenizer, q))
        prompt = rag_prompt(q, [retrieved], tokenizer.encode, PROMPT_TOKENS)
        answers["retrieval"].append(answer(reader, tokenizer, prompt))
        prompt = rag_prompt(q, [gold], tokenizer.encode, PROMPT_TOKENS)
        answers["oracle passage"].append(answer(reader, tokenizer, prompt))
        answers["extractive"].append(first_sentence(retrieved.split(": ", 1)[1]))
    refs = [ref for _, ref, _ in questions]
    ev = RagEvaluation(refs, answers)
    for system, hyps in answers.items():
        ev.chrf[system] = corpus_chrf(hyps, [refs])
        ev.per_question[system] = [
            sentence_chrf(h, [r]) for h, r in zip(hyps, refs, strict=True)
        ]
    ev.gain = paired_bootstrap(
        ev.per_question["retrieval"], ev.per_question["closed book"], seed=0
    )
    return ev


def evaluate_reader(
    reader: nn.Module | None = None, progress: bool = True
) -> RagEvaluation:
    """:func:`evaluate` on all held-out questions with the shipped index and MiniLM's
    top chunk for each question as asked, first the module questions (kept in the
    result's ``modules``), then the questions about what a definition does; `reader`
    defaults to the shipped one (:data:`READER`)."""
    from llmbook.model.encoders import embed, load_minilm

    chunks = [c for _, c in course_chunks()]
    questions = held_out_questions(chunks)
    modules = module_questions(questions, chunks)
    minilm_tokenizer, minilm = load_minilm()
    index = load_index(chunks)
    reader = from_pretrained(READER) if reader is None else reader.eval()
    tokenizer = load_tokenizer("course-gpt-sft")
    results = []
    for asked, ask in ((modules, module_question), (questions, question)):
        queries = embed([ask(n).strip() for n, _, _ in asked], minilm_tokenizer, minilm)
        _, ranked = exact_search(queries.cpu(), index, k=1)
        top = ranked[:, 0].tolist()
        results.append(evaluate(reader, tokenizer, chunks, asked, top, progress, ask))
    results[1].modules = results[0]
    return results[1]


def main(argv: Sequence[str] | None = None) -> Path | RagEvaluation:
    """``python -m llmbook.apps.rag``: build the index, tune the reader, or evaluate."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.apps.rag", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--train-reader", action="store_true",
        help=f"tune course-gpt-sft into the reader ({READER}) and save it in --out",
    )  # fmt: skip
    mode.add_argument(
        "--evaluate", action="store_true",
        help=f"score the shipped reader ({READER}) on the held-out questions",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="directory to write into")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="index: embedding batch"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        ev = evaluate_reader()
        print(ev.modules.line("rag module questions"))
        print(ev.line())
        return ev
    if args.out is None:
        parser.error("--out DIR is required to build the index or tune the reader")
    if args.train_reader:
        out = train_reader(args.out)
        print(json.dumps(json.loads((out / "config.json").read_text())["results"]))
    else:
        out = build_index(args.out, args.batch_size)
    print("wrote", out)
    return out


if __name__ == "__main__":
    main()
