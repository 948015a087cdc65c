"""Sphinx extension for the book: self-check quizzes that work without a kernel.

A chapter's markdown cell holds one line::

    ```{quiz} ../book/quizzes/03_attention.yml
    ```

The argument is a YAML file, resolved like ``{include}``: relative to the page's own
folder, or to the book root when it starts with ``/``. The file holds::

    title: Check your understanding        # optional
    questions:
      - question: What does the softmax do to the scores?   # inline MyST
        multiple: false                    # optional; true = checkboxes, any number right
        options:
          - text: Turns them into weights that sum to one.
            correct: true
            explanation: Why this is right (MyST, may hold several paragraphs).
          - text: ...
            explanation: Why this is wrong.

Every question has 2 to 5 options and an explanation for each; exactly one option is
correct unless ``multiple: true``, in which case at least one is. :func:`load_quiz`
checks all of this and raises ``ValueError`` naming the file, the question and the
problem; the directive turns that into a build error.

In HTML each question is a ``<fieldset>`` of labelled radio buttons (checkboxes for
``multiple``) with a "Check" and a "Show answer" button. The script
(``llmbook_quiz.js``, copied to ``_static`` with its stylesheet; no CDN, nothing
loaded from outside) marks the chosen options right or wrong, reveals their
explanations and announces the result in a live region. Other builders (LaTeX, text,
...) get plain text instead: the questions with lettered options, then the answers and
all explanations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

STATIC = Path(__file__).resolve().parent / "quiz_static"
LETTERS = "ABCDE"
MIN_OPTIONS, MAX_OPTIONS = 2, 5
QUESTION_KEYS = {"question", "options", "multiple"}
OPTION_KEYS = {"text", "correct", "explanation"}


# --- the YAML file -----------------------------------------------------------------


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: must be a non-empty string, got {value!r}")
    return value.strip()


def validate_quiz(data: Any, source: str = "quiz") -> dict:
    """Check a parsed quiz and return it normalised (stripped strings, bools set).

    Raises:
        ValueError: naming ``source``, the question and what is wrong.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: the top level must be a mapping with 'questions'")
    unknown = set(data) - {"title", "questions"}
    if unknown:
        raise ValueError(f"{source}: unknown top-level keys {sorted(unknown)}")
    title = data.get("title", "Check your understanding")
    title = _text(title, f"{source}: title")
    questions = data.get("questions")
    if not isinstance(questions, list) or not questions:
        raise ValueError(f"{source}: 'questions' must be a non-empty list")
    out = []
    for i, q in enumerate(questions, 1):
        where = f"{source}: question {i}"
        if not isinstance(q, dict):
            raise ValueError(f"{where}: must be a mapping")
        unknown = set(q) - QUESTION_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        stem = _text(q.get("question"), f"{where}: 'question'")
        multiple = q.get("multiple", False)
        if not isinstance(multiple, bool):
            raise ValueError(f"{where}: 'multiple' must be true or false")
        options = q.get("options")
        if not isinstance(options, list) or not (
            MIN_OPTIONS <= len(options) <= MAX_OPTIONS
        ):
            n = len(options) if isinstance(options, list) else options
            raise ValueError(
                f"{where}: needs a list of {MIN_OPTIONS} to {MAX_OPTIONS} options, "
                f"got {n!r}"
            )
        opts = []
        for j, o in enumerate(options, 1):
            owhere = f"{where}, option {j}"
            if not isinstance(o, dict):
                raise ValueError(f"{owhere}: must be a mapping")
            unknown = set(o) - OPTION_KEYS
            if unknown:
                raise ValueError(f"{owhere}: unknown keys {sorted(unknown)}")
            correct = o.get("correct", False)
            if not isinstance(correct, bool):
                raise ValueError(f"{owhere}: 'correct' must be true or false")
            opts.append(
                {
                    "text": _text(o.get("text"), f"{owhere}: 'text'"),
                    "correct": correct,
                    "explanation": _text(
                        o.get("explanation"), f"{owhere}: 'explanation'"
                    ),
                }
            )
        texts = [o["text"] for o in opts]
        if len(set(texts)) != len(texts):
            raise ValueError(f"{where}: two options have the same text")
        n_right = sum(o["correct"] for o in opts)
        if multiple and n_right < 1:
            raise ValueError(f"{where}: a multi-select question needs a correct option")
        if not multiple and n_right != 1:
            raise ValueError(
                f"{where}: needs exactly one correct option, has {n_right} "
                "(set 'multiple: true' for a multi-select question)"
            )
        out.append({"question": stem, "multiple": multiple, "options": opts})
    return {"title": title, "questions": out}


def load_quiz(path: str | Path) -> dict:
    """Read and check a quiz YAML file (see :func:`validate_quiz`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"quiz file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    return validate_quiz(data, str(path))


# --- nodes -------------------------------------------------------------------------


class quiz(nodes.General, nodes.Element):
    """The whole quiz: child 0 is the interactive form, child 1 the text fallback."""


class quiz_question(nodes.General, nodes.Element):
    """A <fieldset>: the legend (child 0), the options, then the controls."""


class quiz_legend(nodes.TextElement):
    pass


class quiz_option(nodes.General, nodes.Element):
    """One choice: a <label> holding the input and the option text, then the
    hidden explanation (child 1)."""


class quiz_label(nodes.TextElement):
    pass


class quiz_explanation(nodes.General, nodes.Element):
    pass


def visit_quiz_html(self, node: quiz) -> None:
    self.body.append(
        self.starttag(
            node,
            "section",
            CLASS="llmbook-quiz",
            **{"aria-label": node["title"], "data-quiz": node["quiz_id"]},
        )
    )
    self.body.append(
        f'<p class="llmbook-quiz-title">{self.encode(node["title"])}</p>\n'
    )
    self.body.append(
        '<noscript><p class="llmbook-quiz-noscript">This quiz needs JavaScript to '
        "check answers.</p></noscript>\n"
    )
    node[0].walkabout(self)  # the interactive part only; the fallback is for print
    self.body.append("</section>\n")
    raise nodes.SkipNode


def visit_question_html(self, node: quiz_question) -> None:
    self.body.append(
        self.starttag(
            node,
            "fieldset",
            CLASS="llmbook-quiz-q",
            **{"data-multiple": "1" if node["multiple"] else "0"},
        )
    )


def depart_question_html(self, node: quiz_question) -> None:
    qid = node["ids"][0]
    self.body.append(
        '<div class="llmbook-quiz-controls">'
        f'<button type="button" class="llmbook-quiz-check" data-role="check" '
        f'aria-describedby="{qid}-feedback">Check</button> '
        f'<button type="button" class="llmbook-quiz-reveal" data-role="reveal">'
        "Show answer</button>"
        f'<p class="llmbook-quiz-feedback" id="{qid}-feedback" data-role="feedback" '
        'role="status" aria-live="polite"></p></div>\n'
    )
    self.body.append("</fieldset>\n")


def visit_legend_html(self, node: quiz_legend) -> None:
    self.body.append(self.starttag(node, "legend", CLASS="llmbook-quiz-legend"))
    self.body.append(f'<span class="llmbook-quiz-number">{node["number"]}.</span> ')


def depart_legend_html(self, node: quiz_legend) -> None:
    self.body.append("</legend>\n")


def visit_option_html(self, node: quiz_option) -> None:
    self.body.append(
        self.starttag(
            node,
            "div",
            CLASS="llmbook-quiz-opt",
            **{"data-correct": "1" if node["correct"] else "0"},
        )
    )


def depart_option_html(self, node: quiz_option) -> None:
    self.body.append("</div>\n")


def visit_label_html(self, node: quiz_label) -> None:
    oid = node["input_id"]
    kind = "checkbox" if node["multiple"] else "radio"
    self.body.append(f'<label for="{oid}" class="llmbook-quiz-label">')
    self.body.append(
        f'<input type="{kind}" id="{oid}" name="{node["name"]}" '
        f'value="{node["letter"]}" aria-describedby="{oid}-expl"> '
        f'<span class="llmbook-quiz-letter">{node["letter"]}.</span> '
    )


def depart_label_html(self, node: quiz_label) -> None:
    self.body.append('<span class="llmbook-quiz-mark" aria-hidden="true"></span>')
    self.body.append("</label>\n")


def visit_explanation_html(self, node: quiz_explanation) -> None:
    self.body.append(
        f'<div class="llmbook-quiz-expl" id="{node["input_id"]}-expl" '
        'data-role="explanation" hidden>'
        '<span class="llmbook-quiz-verdict" data-role="verdict"></span>'
    )


def depart_explanation_html(self, node: quiz_explanation) -> None:
    self.body.append("</div>\n")


# --- the directive -----------------------------------------------------------------


class QuizDirective(SphinxDirective):
    required_arguments = 1
    optional_arguments = 0
    final_argument_whitespace = True
    has_content = False

    def run(self) -> list[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0].strip(), self.env.docname)
        self.env.note_dependency(rel)
        try:
            data = load_quiz(path)
        except ValueError as err:
            raise self.error(f"quiz: {err}") from err
        serial = self.env.new_serialno("llmbook-quiz")
        stem = Path(rel).stem.replace("_", "-").replace(".", "-")
        quiz_id = f"quiz-{stem}-{serial}"
        node = quiz(title=data["title"], quiz_id=quiz_id)
        self.set_source_info(node)
        node += self._form(data, quiz_id)
        node += self._fallback(data)
        return [node]

    def _inline(self, text: str) -> list[nodes.Node]:
        children, messages = self.state.inline_text(text, self.lineno)
        return [*children, *messages]

    def _block(self, text: str, into: nodes.Element) -> nodes.Element:
        self.state.nested_parse(
            self._lines(text), self.content_offset, into, match_titles=False
        )
        return into

    def _lines(self, text: str):
        from docutils.statemachine import StringList

        return StringList(text.splitlines(), source=self.get_source_info()[0])

    def _form(self, data: dict, quiz_id: str) -> nodes.Element:
        form = nodes.container(classes=["llmbook-quiz-form"])
        for i, q in enumerate(data["questions"], 1):
            qid = f"{quiz_id}-q{i}"
            fieldset = quiz_question(ids=[qid], multiple=q["multiple"])
            fieldset += quiz_legend("", *self._inline(q["question"]), number=i)
            if q["multiple"]:
                fieldset[0] += nodes.inline(
                    "", " (choose all that apply)", classes=["llmbook-quiz-hint"]
                )
            for j, o in enumerate(q["options"]):
                oid = f"{qid}-o{j + 1}"
                option = quiz_option(correct=o["correct"])
                option += quiz_label(
                    "",
                    *self._inline(o["text"]),
                    input_id=oid,
                    name=qid,
                    letter=LETTERS[j],
                    multiple=q["multiple"],
                )
                option += self._block(o["explanation"], quiz_explanation(input_id=oid))
                fieldset += option
            form += fieldset
        return form

    def _fallback(self, data: dict) -> nodes.Element:
        """Plain text for builders without JavaScript: questions, then answers."""
        box = nodes.container(classes=["llmbook-quiz-text"])
        box += nodes.rubric("", data["title"])
        questions = nodes.enumerated_list(enumtype="arabic", prefix="", suffix=".")
        for q in data["questions"]:
            item = nodes.list_item()
            stem = nodes.paragraph("", "", *self._inline(q["question"]))
            if q["multiple"]:
                stem += nodes.Text(" (choose all that apply)")
            item += stem
            options = nodes.bullet_list(bullet="-")
            for j, o in enumerate(q["options"]):
                entry = nodes.paragraph("", f"{LETTERS[j]}. ", *self._inline(o["text"]))
                options += nodes.list_item("", entry)
            item += options
            questions += item
        box += questions
        box += nodes.rubric("", "Answers")
        answers = nodes.enumerated_list(enumtype="arabic", prefix="", suffix=".")
        for q in data["questions"]:
            right = [LETTERS[j] for j, o in enumerate(q["options"]) if o["correct"]]
            item = nodes.list_item()
            item += nodes.paragraph("", "Answer: " + ", ".join(right))
            explained = nodes.bullet_list(bullet="-")
            for j, o in enumerate(q["options"]):
                entry = nodes.list_item()
                verdict = "right" if o["correct"] else "wrong"
                entry += nodes.paragraph("", f"{LETTERS[j]} ({verdict}):")
                self._block(o["explanation"], entry)
                explained += entry
            item += explained
            answers += item
        box += answers
        return box


def use_fallback(app, doctree: nodes.document, docname: str) -> None:
    """Outside HTML, replace each quiz by its plain-text version."""
    if app.builder.format == "html":
        return
    for node in list(doctree.findall(quiz)):
        node.replace_self(node[1].children)


def add_static_path(app) -> None:
    if str(STATIC) not in app.config.html_static_path:
        app.config.html_static_path.append(str(STATIC))


def setup(app) -> dict[str, Any]:
    html = {
        quiz: (visit_quiz_html, None),
        quiz_question: (visit_question_html, depart_question_html),
        quiz_legend: (visit_legend_html, depart_legend_html),
        quiz_option: (visit_option_html, depart_option_html),
        quiz_label: (visit_label_html, depart_label_html),
        quiz_explanation: (visit_explanation_html, depart_explanation_html),
    }
    for node_class, handlers in html.items():
        app.add_node(node_class, html=handlers)
    app.add_directive("quiz", QuizDirective)
    app.connect("builder-inited", add_static_path)
    app.connect("doctree-resolved", use_fallback)
    app.add_css_file("llmbook_quiz.css")
    app.add_js_file("llmbook_quiz.js", defer="defer")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
