"""Self-check quizzes: the YAML files of every chapter and the `{quiz}` directive.

The files (book/quizzes/NN_name.yml) are checked against the schema of
book/_ext/llmbook_quiz.py: 3 to 5 questions per chapter, 2 to 5 options per question,
exactly one correct option unless the question says ``multiple: true``, an
explanation for every option. The directive is exercised in a throwaway Sphinx project
(tests/quiz_site.py) built with ``-W``: HTML gets the interactive form, the text and
LaTeX builders the plain-text fallback with the answers. The browser test of the
rendered form is tests/book/test_browser_quiz.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import llmbook_quiz  # noqa: E402
import quiz_site  # noqa: E402

QUIZZES = ROOT / "book" / "quizzes"
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_introduction", "02_data", "03_attention", "04_transformer", "05_pretraining",
    "06_decoding", "07_finetuning", "08_evaluation", "09_translation", "10_moe",
    "11_deployment", "12_applications", "13_responsible_ai",
]  # fmt: skip


# --- the quiz files ----------------------------------------------------------------


def test_every_chapter_has_a_quiz():
    assert set(EXPECTED) <= set(CHAPTERS)
    missing = [c for c in CHAPTERS if not (QUIZZES / f"{c}.yml").is_file()]
    assert missing == [], f"chapters without book/quizzes/<name>.yml: {missing}"
    stray = sorted({p.stem for p in QUIZZES.glob("*.yml")} - set(CHAPTERS))
    assert stray == [], f"quiz files for no chapter: {stray}"


@pytest.mark.parametrize("chapter", EXPECTED)
def test_quiz_file_follows_the_schema(chapter):
    path = QUIZZES / f"{chapter}.yml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    quiz = llmbook_quiz.load_quiz(path)  # raises ValueError on any schema problem
    assert 3 <= len(quiz["questions"]) <= 5, f"{chapter}: {len(quiz['questions'])}"
    for i, (q, raw_q) in enumerate(
        zip(quiz["questions"], raw["questions"], strict=True), 1
    ):
        where = f"{chapter} question {i}"
        assert 2 <= len(q["options"]) <= 5, where
        n_right = sum(o["correct"] for o in q["options"])
        assert n_right == 1 or (raw_q.get("multiple") is True and n_right >= 1), where
        for o in q["options"]:
            assert len(o["explanation"]) >= 20, f"{where}: explanation too short"
            assert o["explanation"] != o["text"], f"{where}: explanation repeats text"
    stems = [q["question"] for q in quiz["questions"]]
    assert len(set(stems)) == len(stems), f"{chapter}: repeated question"


def test_right_answers_are_not_always_in_the_same_place():
    """A reader should not be able to pass every quiz by always picking A."""
    places = []
    for chapter in EXPECTED:
        for q in llmbook_quiz.load_quiz(QUIZZES / f"{chapter}.yml")["questions"]:
            places += [j for j, o in enumerate(q["options"]) if o["correct"]]
    counts = {j: places.count(j) for j in set(places)}
    assert len(counts) >= 3, counts
    assert max(counts.values()) <= 0.5 * len(places), counts


# --- the schema check itself ---------------------------------------------------------


def good() -> dict:
    return yaml.safe_load(quiz_site.QUIZ)


def broken(change) -> dict:
    data = good()
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("questions"), "'questions' must be a non-empty list"),
        (lambda d: d["questions"].clear(), "'questions' must be a non-empty list"),
        (lambda d: d.update(extra=1), "unknown top-level keys"),
        (lambda d: d["questions"][0].pop("question"), "question 1: 'question'"),
        (lambda d: d["questions"][0]["options"].pop(), None),  # two options: fine
        (lambda d: d["questions"][0]["options"][1:].clear(), None),
        (lambda d: d["questions"][0].update(options=d["questions"][0]["options"][:1]),
         "needs a list of 2 to 5 options, got 1"),
        (lambda d: d["questions"][0]["options"].extend(
            [{"text": f"x{i}", "explanation": "no"} for i in range(3)]),
         "needs a list of 2 to 5 options, got 6"),
        (lambda d: d["questions"][0]["options"][1].update(correct=True),
         "needs exactly one correct option, has 2"),
        (lambda d: d["questions"][0]["options"][0].update(correct=False),
         "needs exactly one correct option, has 0"),
        (lambda d: d["questions"][0]["options"][0].update(correct="yes"),
         "option 1: 'correct' must be true or false"),
        (lambda d: d["questions"][1]["options"][1].pop("explanation"),
         "question 2, option 2: 'explanation'"),
        (lambda d: d["questions"][1]["options"][1].update(explanation="  "),
         "question 2, option 2: 'explanation'"),
        (lambda d: [o.update(correct=False) for o in d["questions"][1]["options"]],
         "multi-select question needs a correct option"),
        (lambda d: d["questions"][1].update(multiple="yes"),
         "'multiple' must be true or false"),
        (lambda d: d["questions"][1]["options"][1].update(text="GPT-2"),
         "two options have the same text"),
        (lambda d: d["questions"][1]["options"][1].update(hint="x"),
         "option 2: unknown keys ['hint']"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_problem(change, message):
    data = broken(change)
    if message is None:
        assert llmbook_quiz.validate_quiz(data, "q.yml")["questions"]
        return
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        llmbook_quiz.validate_quiz(data, "q.yml")
    assert str(err.value).startswith("q.yml")


def test_load_quiz_rejects_missing_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="quiz file not found"):
        llmbook_quiz.load_quiz(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("questions: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        llmbook_quiz.load_quiz(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        llmbook_quiz.load_quiz(bad)


# --- the directive -------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return quiz_site.write_project(tmp_path_factory.mktemp("quiz-src"))


@pytest.fixture(scope="module")
def html(site, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quiz-html")
    status, log = quiz_site.build(site, out)
    assert status == 0, log
    return out


def test_directive_renders_the_form_in_a_notebook_and_a_page(html):
    for page in ("chapters/03_quiz.html", "page.html"):
        text = (html / page).read_text(encoding="utf-8")
        assert text.count('<section aria-label="Check your understanding"') == 1, page
        assert text.count('<fieldset class="llmbook-quiz-q"') == 2, page
        radios = re.findall(r'<input type="radio" id="([^"]+)" name="([^"]+)"', text)
        boxes = re.findall(r'<input type="checkbox" id="([^"]+)"', text)
        assert len(radios) == 3 and len(boxes) == 3, page
        assert len({name for _, name in radios}) == 1  # one group per question
        for input_id, _ in radios:  # every input has its label and its explanation
            assert f'<label for="{input_id}"' in text
            assert f'id="{input_id}-expl" data-role="explanation" hidden>' in text
        correct = re.findall(r'class="llmbook-quiz-opt" data-correct="(\d)"', text)
        assert correct == ["1", "0", "0", "1", "0", "1"], page
        # inline MyST in questions, options and explanations is rendered
        assert "<code" in text and 'class="math' in text and "<em>smooth</em>" in text
        assert "(choose all that apply)" in text
        assert "_static/llmbook_quiz.js" in text and "_static/llmbook_quiz.css" in text
        assert "Answers" not in text, "the text fallback leaked into HTML"
    for asset in ("llmbook_quiz.js", "llmbook_quiz.css"):
        assert (html / "_static" / asset).stat().st_size > 500
    js = (html / "_static" / "llmbook_quiz.js").read_text()
    assert "http" not in js, "the quiz script must not load anything"


def test_every_chapter_quiz_renders(html):
    """The real quiz files build with -W (their MyST markup is valid) and render all
    their questions and options."""
    text = (html / "all.html").read_text(encoding="utf-8")
    for chapter in EXPECTED:
        quiz = llmbook_quiz.load_quiz(QUIZZES / f"{chapter}.yml")
        assert f'id="quiz-{chapter.replace("_", "-")}-' in text, chapter
        n_opts = sum(len(q["options"]) for q in quiz["questions"])
        found = re.findall(
            rf'<input type="(?:radio|checkbox)" id="quiz-{chapter.replace("_", "-")}-',
            text,
        )
        assert len(found) == n_opts, chapter
    assert text.count('class="llmbook-quiz-q"') == sum(
        len(llmbook_quiz.load_quiz(QUIZZES / f"{c}.yml")["questions"]) for c in EXPECTED
    )
    assert "problematic" not in text and "system-message" not in text


def test_two_quizzes_from_one_file_get_distinct_ids(site, tmp_path):
    nb_path = site / "chapters" / "03_quiz.ipynb"
    original = nb_path.read_text()
    try:
        nb = json.loads(original)
        nb["cells"].append({**nb["cells"][-1], "id": "second-quiz"})
        nb_path.write_text(json.dumps(nb))
        status, log = quiz_site.build(site, tmp_path / "out")
        assert status == 0, log
    finally:
        nb_path.write_text(original)
    text = (tmp_path / "out" / "chapters" / "03_quiz.html").read_text()
    ids = re.findall(r' id="([^"]+)"', text)
    assert len(ids) == len(set(ids)), "duplicate element ids on one page"
    assert text.count('class="llmbook-quiz-q"') == 4


@pytest.mark.parametrize("builder", ["text", "latex"])
def test_other_builders_get_the_questions_and_the_answers(site, tmp_path, builder):
    status, log = quiz_site.build(site, tmp_path / builder, builder)
    assert status == 0, log
    if builder == "text":
        text = (tmp_path / builder / "chapters" / "03_quiz.txt").read_text()
        assert "A. It turns them into positive weights that sum to one." in text
        assert "Answer: A" in text and "Answer: A, C" in text
        assert "B (wrong):" in text and "smooth" in text
    else:
        text = "".join(p.read_text() for p in (tmp_path / builder).glob("*.tex"))
        assert "Answer: A, C" in text and "llmbook-quiz" not in text


@pytest.mark.parametrize(
    ("quiz_text", "message"),
    [
        (quiz_site.QUIZ.replace("        correct: true\n", "", 1),
         "needs exactly one correct option, has 0"),
        ("questions: []\n", "'questions' must be a non-empty list"),
    ],
)  # fmt: skip
def test_a_bad_quiz_file_fails_the_build(tmp_path, quiz_text, message):
    src = quiz_site.write_project(tmp_path / "src", quiz_text)
    status, log = quiz_site.build(src, tmp_path / "out")
    assert status != 0
    assert message in log and "03_quiz.yml" in log


def test_a_missing_quiz_file_fails_the_build(tmp_path):
    src = quiz_site.write_project(tmp_path / "src")
    (src / "book" / "quizzes" / "03_quiz.yml").unlink()
    status, log = quiz_site.build(src, tmp_path / "out")
    assert status != 0 and "quiz file not found" in log


def test_the_book_loads_the_extension():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"]["llmbook_quiz"] == "book/_ext"
