"""The self-check quiz works in a real browser, offline.

Builds the throwaway project of tests/quiz_site.py (the book's theme, the `{quiz}`
directive in a notebook cell exactly as the chapters use it; no full book needed, so
this file is not marked ``book``), serves it on 127.0.0.1 and drives the headless
Chromium of tests/book/test_browser.py through Playwright: a wrong answer, then the right
one chosen from the keyboard, a multi-select question, "Show answer"; no console
errors and no request to another host. Without Chromium or Playwright it skips with
one line saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from find_browser import find_browser, why_not  # noqa: E402

BROWSER = find_browser(install=False)
if BROWSER is None:
    pytest.skip(f"browser tests skipped: {why_not()}", allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests skipped: playwright is not installed"
)
import quiz_site  # noqa: E402
from helpers import serve_directory  # noqa: E402
from llmbook_quiz import load_quiz  # noqa: E402

SCREENSHOTS = ROOT / "_build" / "screenshots"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    src = quiz_site.write_project(
        tmp_path_factory.mktemp("quiz-src"), theme="sphinx_book_theme"
    )
    out = tmp_path_factory.mktemp("quiz-html")
    status, log = quiz_site.build(src, out)
    assert status == 0, log
    with serve_directory(out) as url:
        yield url


class Visit:
    """A page with its console errors and the requests that left 127.0.0.1."""

    def __init__(self, context, url: str):
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page = context.new_page()
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.route("**/*", self._route)
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle", timeout=15_000)

    def _route(self, route) -> None:
        parsed = urlparse(route.request.url)
        if parsed.scheme in ("http", "https", "ws", "wss") and (
            parsed.hostname != "127.0.0.1"
        ):
            self.outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()


def shown(question) -> list[bool]:
    """Which options' explanations are visible."""
    return question.locator('[data-role="explanation"]').evaluate_all(
        "els => els.map(e => !e.hidden && e.offsetParent !== null)"
    )


def marks(question) -> list[str]:
    return question.locator(".llmbook-quiz-opt").evaluate_all(
        "els => els.map(e => e.classList.contains('llmbook-quiz-right') ? 'right'"
        " : e.classList.contains('llmbook-quiz-wrong') ? 'wrong' : '')"
    )


@pytest.mark.parametrize("page", ["chapters/03_quiz", "page"])
def test_quiz_marks_answers_and_explains(browser_context, base_url, page):
    visit = Visit(browser_context, f"{base_url}/{page}.html")
    visit.page.wait_for_selector("mjx-container", state="attached", timeout=15_000)
    quiz = visit.page.locator("section.llmbook-quiz")
    assert quiz.count() == 1
    q1, q2 = (visit.page.locator(".llmbook-quiz-q").nth(i) for i in (0, 1))
    assert q1.get_attribute("data-ready") == "1", "the quiz script did not run"
    feedback = q1.locator('[data-role="feedback"]')
    assert shown(q1) == [False, False, False]

    # nothing chosen yet
    q1.get_by_role("button", name="Check").click()
    assert feedback.inner_text() == "Choose an answer first."

    # a wrong answer, chosen by clicking its label text
    q1.get_by_text("It keeps only the largest score.").click()
    assert q1.get_by_label("It keeps only the largest score.").is_checked()
    q1.get_by_role("button", name="Check").click()
    assert q1.get_attribute("data-result") == "wrong"
    assert feedback.inner_text().startswith("Not quite")
    assert marks(q1) == ["", "wrong", ""]
    assert shown(q1) == [False, True, False], "only the chosen option is explained"
    said = " ".join(q1.locator(".llmbook-quiz-wrong").inner_text().split())
    assert said.endswith("Wrong: That is argmax; the softmax is its smooth version.")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    quiz.screenshot(path=str(SCREENSHOTS / f"quiz_{page.replace('/', '_')}_wrong.png"))

    # the right answer, from the keyboard: arrow keys move within the radio group
    q1.get_by_label("It keeps only the largest score.").focus()
    visit.page.keyboard.press("ArrowUp")
    assert q1.get_by_label("It turns them into positive weights").is_checked()
    assert shown(q1) == [False, False, False], "changing the answer clears the marks"
    for _ in range(4):  # radios are one tab stop; MathJax's formulas are stops too
        visit.page.keyboard.press("Tab")
        if visit.page.evaluate("document.activeElement.dataset.role") == "check":
            break
    else:
        pytest.fail("Tab from the options did not reach the Check button")
    visit.page.keyboard.press("Enter")
    assert q1.get_attribute("data-result") == "right"
    assert feedback.inner_text() == "Correct."
    assert marks(q1) == ["right", "wrong", "wrong"]
    assert shown(q1) == [True, True, True], "a right answer explains every option"
    assert q1.locator(".llmbook-quiz-right").inner_text().count("Right:") == 1
    quiz.screenshot(path=str(SCREENSHOTS / f"quiz_{page.replace('/', '_')}_right.png"))

    # multi-select: one of two right answers is not enough
    q2.get_by_label("GPT-2").check()
    q2.get_by_role("button", name="Check").click()
    assert q2.get_attribute("data-result") == "wrong"
    assert marks(q2) == ["right", "", ""]  # what was chosen is right, but incomplete
    q2.get_by_label("The course GPT").check()
    q2.get_by_role("button", name="Check").click()
    assert q2.get_attribute("data-result") == "right"
    assert q2.locator('[data-role="feedback"]').inner_text() == "Correct."

    # "Show answer" reveals the right option and every explanation
    q2.get_by_label("BERT").check()
    q2.get_by_role("button", name="Show answer").click()
    assert q2.get_attribute("data-result") == "revealed"
    assert marks(q2) == ["right", "wrong", "right"]
    assert shown(q2) == [True, True, True]

    # the first question was not touched by the second one's buttons
    assert q1.get_attribute("data-result") == "right"
    assert visit.errors == [], f"console errors: {visit.errors}"
    assert visit.outside == [], f"requests to other hosts: {visit.outside}"
    visit.page.close()


def test_every_chapter_quiz_works_in_the_browser(browser_context, base_url):
    """Every chapter's real quiz: the script is ready on each question, its formulas
    render without MathJax errors, checking the right option says "Correct." and
    "Show answer" explains every option; no console errors."""
    visit = Visit(browser_context, f"{base_url}/all.html")
    page = visit.page
    page.wait_for_selector("mjx-container", state="attached", timeout=15_000)
    page.evaluate("() => MathJax.startup.promise")
    questions = page.locator(".llmbook-quiz-q")
    n = questions.count()
    assert n == sum(len(load_quiz(p)["questions"]) for p in quiz_site.BOOK_QUIZZES)
    assert page.locator("mjx-merror").count() == 0, "MathJax could not render a formula"
    for i in range(n):
        q = questions.nth(i)
        assert q.get_attribute("data-ready") == "1", f"question {i}: script not ready"
        for opt in q.locator('.llmbook-quiz-opt[data-correct="1"]').all():
            opt.locator("input").check()
        q.get_by_role("button", name="Check").click()
        assert q.locator('[data-role="feedback"]').inner_text() == "Correct.", i
        q.get_by_role("button", name="Show answer").click()
        assert all(shown(q)), f"question {i}: an explanation stayed hidden"
        n_right = q.locator('.llmbook-quiz-opt[data-correct="1"]').count()
        assert marks(q).count("right") == n_right, i
    assert visit.errors == [], f"console errors: {visit.errors}"
    assert visit.outside == [], f"requests to other hosts: {visit.outside}"
    visit.page.close()
