"""A throwaway Sphinx project that uses book/_ext/llmbook_quiz.py, for the quiz tests.

It is laid out like the book: a notebook in ``chapters/`` whose markdown cell holds the
directive line the chapters use (``../book/quizzes/NN_name.yml``, relative to the
page), a MyST page in the root that names its file from the project root
(``/book/quizzes/...``), the test quiz under ``book/quizzes/``, and a page ``all``
that shows every chapter's real quiz (copied from the book's ``book/quizzes/``).
Nothing executes and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import nbformat
from sphinx.cmd.build import build_main

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "book" / "_ext"

QUIZ = """\
title: Check your understanding
questions:
  - question: What does a softmax do to the scores $e_i$?
    options:
      - text: It turns them into positive weights that sum to one.
        correct: true
        explanation: It exponentiates each score and divides by the sum.
      - text: It keeps only the largest score.
        explanation: That is `argmax`; the softmax is its *smooth* version.
      - text: It divides them by $\\sqrt{d_k}$.
        explanation: That scaling happens before the softmax, not inside it.
  - question: Which of these models are trained to predict the next token?
    multiple: true
    options:
      - text: GPT-2
        correct: true
        explanation: A decoder-only model trained left to right.
      - text: BERT
        explanation: A masked language model that sees both sides.
      - text: The course GPT
        correct: true
        explanation: Same causal objective as GPT-2.
"""

CONF = f"""\
import sys
sys.path.insert(0, {str(EXT)!r})
project = "quiz test"
# MathJax from _static, as in the book: nothing is fetched from a CDN
extensions = ["myst_nb", "sphinx-mathjax-offline", "llmbook_quiz"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
exclude_patterns = ["_build"]
html_theme = {{theme!r}}
html_context = {{{{"default_mode": "auto"}}}}  # as _config.yml: no theme-mode warning
"""

INDEX = """\
# Quiz test

```{toctree}
chapters/03_quiz
page
all
```
"""
BOOK_QUIZZES = sorted((ROOT / "book" / "quizzes").glob("*.yml"))

PAGE = """\
# A MyST page

:::{quiz} /book/quizzes/03_quiz.yml
:::
"""

CHAPTER_LINE = "```{quiz} ../book/quizzes/03_quiz.yml\n```"


def write_project(src: Path, quiz_text: str = QUIZ, theme: str = "alabaster") -> Path:
    """Write the project's sources into ``src`` and return it."""
    (src / "chapters").mkdir(parents=True, exist_ok=True)
    (src / "book" / "quizzes").mkdir(parents=True, exist_ok=True)
    (src / "book" / "quizzes" / "03_quiz.yml").write_text(quiz_text, encoding="utf-8")
    (src / "conf.py").write_text(CONF.format(theme=theme))
    (src / "index.md").write_text(INDEX)
    (src / "page.md").write_text(PAGE)
    # every chapter's real quiz, one after the other, as the chapters will show them
    all_page = ["# Every chapter's quiz\n"]
    for path in BOOK_QUIZZES:
        shutil.copy(path, src / "book" / "quizzes" / path.name)
        all_page.append(
            f"## {path.stem}\n\n```{{quiz}} book/quizzes/{path.name}\n```\n"
        )
    (src / "all.md").write_text("\n".join(all_page), encoding="utf-8")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Chapter 3: A chapter\n\nSome text."),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("## Self-check\n\n" + CHAPTER_LINE),
    ]
    nbformat.write(nb, src / "chapters" / "03_quiz.ipynb")
    return src


def build(src: Path, out: Path, builder: str = "html") -> tuple[int, str]:
    """Build with ``-W`` (warnings are errors); return the exit status and the log."""
    if out.exists():
        shutil.rmtree(out)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = build_main(["-W", "-q", "-E", "-b", builder, str(src), str(out)])
    return status, log.getvalue()
