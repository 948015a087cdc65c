"""The rendered book works in a real browser, offline.

Uses the session's one book build (``built_book`` in tests/conftest.py; set
``LLMBOOK_BOOK_HTML=/path/to/_build/html`` to test an existing build instead), serves
it on 127.0.0.1 and drives a headless Chromium through Playwright. For every page in
``_toc.yml``: no console errors, no broken images, rendered math wherever the page
has math, a Colab launch button on notebook pages, and not one request to a host
other than 127.0.0.1 (such requests are recorded, blocked and listed). On the
attention chapter the kernel-free view reacts to its layer/head selectors and to a
click on a query token; screenshots before and after go to ``_build/screenshots/``.

Chromium: see tools/find_browser.py. Without one these tests skip with one line
saying why. Everything here lives in this one file, so ``pytest -n 2 --dist loadscope``
runs it in a single worker and the book is built once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from find_browser import find_browser, why_not  # noqa: E402
from helpers import serve_directory  # noqa: E402

BROWSER = find_browser(install=False)
if BROWSER is None:
    pytest.skip(f"browser tests skipped: {why_not()}", allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests skipped: playwright is not installed"
)

# One worker builds the book and owns the browser: `--dist loadscope` (or loadfile)
# keeps this file together.
pytestmark = [pytest.mark.book]

LOCAL_HOSTS = {"127.0.0.1"}
SCREENSHOTS = ROOT / "_build" / "screenshots"
ATTENTION_PAGE = "chapters/03_attention"


def toc_pages() -> list[str]:
    """Every page of _toc.yml, in order, as paths without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


PAGES = toc_pages()


def is_notebook(page: str) -> bool:
    return (ROOT / f"{page}.ipynb").exists()


# --- fixtures: build, serve, browse ----------------------------------------------------


@pytest.fixture(scope="module")
def book_html(built_book) -> Path:
    assert built_book.returncode == 0, built_book.log[-5000:]
    return built_book.html


@pytest.fixture(scope="module")
def base_url(book_html):
    with serve_directory(book_html) as url:
        yield url


class Visit:
    """One page opened in the browser, with what it logged and requested."""

    def __init__(self, context, url: str):
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page = context.new_page()
        self.page.on(
            "console", lambda m: self._log(m.text) if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self._log(f"uncaught: {e}"))
        self.page.route("**/*", self._route)
        self.page.goto(url, wait_until="load")

    def _log(self, text: str) -> None:
        self.errors.append(text)  # every console error fails, none is tolerated

    def _route(self, route) -> None:
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https", "ws", "wss") and (
            parsed.hostname not in LOCAL_HOSTS
        ):
            self.outside.append(url)
            route.abort()  # offline by design: nothing may be needed from outside
        else:
            route.continue_()


@pytest.fixture(scope="module")
def visits(browser_context, base_url) -> dict[str, dict]:
    """Open every page once; collect errors, requests, images, math, buttons."""
    results = {}
    for name in PAGES:
        visit = Visit(browser_context, f"{base_url}/{name}.html")
        page = visit.page
        n_math = page.locator(".math").count()
        if n_math:  # a page whose MathJax cannot load fails below, not here
            try:
                page.wait_for_selector(
                    "mjx-container", state="attached", timeout=15_000
                )
                page.evaluate(
                    "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                )
            except playwright_api.TimeoutError:
                pass
        broken = page.evaluate(
            """async () => {
                const imgs = [...document.images];
                for (const img of imgs) img.loading = "eager";
                await Promise.all(imgs.map(i => i.decode().catch(() => null)));
                return imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                           .map(i => i.currentSrc || i.src);
            }"""
        )
        page.wait_for_load_state("networkidle", timeout=15_000)
        results[name] = {
            "errors": list(visit.errors),
            "outside": list(visit.outside),
            "broken_images": broken,
            "n_images": page.locator("img").count(),
            "n_math": n_math,
            "n_mjx": page.locator("mjx-container").count(),
            "math_errors": page.locator("mjx-merror").count(),
            "colab": page.locator('a[href*="colab.research.google.com"]').count(),
        }
        page.close()
    return results


# --- every page ------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_offline(visits, name):
    r = visits[name]
    assert r["errors"] == [], f"{name}: console errors {r['errors']}"
    assert r["broken_images"] == [], f"{name}: broken images {r['broken_images']}"
    if r["n_math"]:
        assert r["n_mjx"] > 0, f"{name}: {r['n_math']} math elements, none rendered"
        assert r["math_errors"] == 0, f"{name}: MathJax reported errors"
    if is_notebook(name):
        assert r["colab"] > 0, f"{name}: no Colab launch button"


def test_no_request_leaves_the_machine(visits):
    outside = {name: r["outside"] for name, r in visits.items() if r["outside"]}
    total = sum(len(v) for v in outside.values())
    for name, r in visits.items():
        print(
            f"{name}: {r['n_images']} images, {r['n_math']} math -> "
            f"{r['n_mjx']} mjx-container, colab links {r['colab']}, "
            f"outside requests {len(r['outside'])}"
        )
    print(f"requests to hosts other than 127.0.0.1: {total} over {len(visits)} pages")
    assert total == 0, f"pages request outside hosts: {outside}"


# --- the kernel-free attention view ----------------------------------------------------


def cell_values(view) -> list[str]:
    return view.locator('td[data-role="cell"]').evaluate_all(
        "cells => cells.map(c => c.dataset.value)"
    )


def test_attention_view_is_interactive(browser_context, base_url):
    assert ATTENTION_PAGE in PAGES
    visit = Visit(browser_context, f"{base_url}/{ATTENTION_PAGE}.html")
    page = visit.page
    view = page.locator("div.llmbook-attn").first
    try:
        view.wait_for(state="visible", timeout=15_000)
    except playwright_api.TimeoutError:
        pytest.fail(f"{ATTENTION_PAGE}: no kernel-free attention view on the page")
    assert view.get_attribute("data-ready") == "1", "the view's script did not run"
    n_q = int(view.get_attribute("data-n-q"))
    n_k = int(view.get_attribute("data-n-k"))
    view.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.screenshot(path=str(SCREENSHOTS / "attention_view_before.png"))

    start = cell_values(view)
    assert len(start) == n_q * n_k and any(float(v) > 0 for v in start)
    head = view.locator('select[data-role="head"]')
    other_head = "0" if head.input_value() != "0" else "1"
    head.select_option(other_head)
    after_head = cell_values(view)
    assert view.get_attribute("data-head") == other_head
    assert after_head != start, "changing the head did not change the heatmap"
    layer = view.locator('select[data-role="layer"]')
    other_layer = "0" if layer.input_value() != "0" else "1"
    layer.select_option(other_layer)
    assert view.get_attribute("data-layer") == other_layer
    assert cell_values(view) != after_head, "changing the layer changed nothing"
    head.select_option("mean")
    assert cell_values(view) != after_head

    q = n_q // 2
    view.locator(f'th[data-role="query"][data-q="{q}"]').click()
    page.mouse.move(0, 0)  # leave the table: the clicked row stays highlighted
    assert view.get_attribute("data-selected-query") == str(q)
    on = view.locator("td.llmbook-attn-on")
    assert on.count() == n_k, "clicking a token should highlight its whole row"
    assert {int(c) for c in on.evaluate_all("cs => cs.map(c => c.dataset.q)")} == {q}
    dimmed = view.locator(f'td[data-role="cell"][data-q="{(q + 1) % n_q}"]').first
    assert float(dimmed.evaluate("c => getComputedStyle(c).opacity")) < 0.5
    assert "looks at" in view.locator('[data-role="info"]').inner_text()
    view.screenshot(path=str(SCREENSHOTS / "attention_view_after.png"))
    assert visit.errors == [] and visit.outside == []
    page.close()


def test_two_views_on_one_page_do_not_clash(browser_context, tmp_path):
    """Two views (one of them cross-attention) in one saved page work independently."""
    import numpy as np

    from llmbook.viz.attention_view import attention_view

    rng = np.random.default_rng(7)
    a_weights = rng.dirichlet(np.ones(5), size=(2, 3, 5))  # self: 5 tokens
    b_weights = rng.dirichlet(np.ones(4), size=(1, 2, 3))  # cross: 3 queries, 4 keys
    a = attention_view(a_weights, list("abcde"))
    b = attention_view(
        b_weights, ["x", "y", "z"], cross_tokens=["k0", "k1", "k2", "k3"]
    )
    page_file = tmp_path / "two.html"
    page_file.write_text(a.to_page().replace("</body>", b.html + "</body>"))
    visit = Visit(browser_context, page_file.as_uri())
    first = visit.page.locator(f"#{a.element_id}")
    second = visit.page.locator(f"#{b.element_id}")
    assert first.get_attribute("data-ready") == "1"
    assert second.get_attribute("data-ready") == "1"
    assert second.get_attribute("data-kind") == "cross"
    assert second.locator('td[data-role="cell"]').count() == 3 * 4
    before = cell_values(second)
    first.locator('select[data-role="head"]').select_option("2")
    first.locator('th[data-role="query"][data-q="1"]').click()
    assert first.get_attribute("data-selected-query") == "1"
    assert second.get_attribute("data-selected-query") == "-1"
    assert second.get_attribute("data-head") == "0" and cell_values(second) == before
    second.locator('th[data-role="query"][data-q="2"]').click()
    assert second.locator("td.llmbook-attn-on").count() == 4
    assert first.get_attribute("data-selected-query") == "1"
    assert visit.errors == [] and visit.outside == []
    visit.page.close()


# --- the kernel-free decoding view -----------------------------------------------------


def shown_bars(view) -> list[list[str]]:
    return view.locator('[data-role="bar"]').evaluate_all(
        "bars => bars.map(b => [b.dataset.tokenId, b.dataset.token, b.dataset.prob])"
    )


def test_decoding_view_redraws_from_its_data(browser_context, tmp_path):
    """A saved decoding view shows, for each choice of selects, the embedded row."""
    import json

    import torch

    from llmbook.model import GPT, GPTConfig, load_tokenizer
    from llmbook.viz.decoding_view import decoding_view

    tokenizer = load_tokenizer("course-gpt")
    torch.manual_seed(0)
    model = GPT(GPTConfig(len(tokenizer), 32, d_model=32, n_heads=2, n_layers=1))
    prompt = 'She said "<b>&amp;</b>"\n and'
    dec = decoding_view(model, tokenizer, prompt, n_tokens=10, continuation_tokens=20)
    visit = Visit(browser_context, dec.save(tmp_path / "decoding.html").as_uri())
    view = visit.page.locator(f"#{dec.element_id}")
    assert view.get_attribute("data-ready") == "1", "the view's script did not run"
    data = json.loads(view.locator('script[data-role="data"]').text_content())
    values = {
        "temperature": [f"{t:g}" for t in data["temperatures"]],
        "top-k": ["off" if k is None else str(k) for k in data["top_ks"]],
        "top-p": [f"{p:g}" for p in data["top_ps"]],
    }
    assert [view.get_attribute(f"data-{r}") for r in values] == ["1", "off", "1"]
    assert prompt in view.inner_text()  # escaped in the HTML, intact on screen

    def expected(t: str, k: str, p: str):
        i = values["temperature"].index(t) * len(values["top-k"])
        i = (i + values["top-k"].index(k)) * len(values["top-p"]) + values[
            "top-p"
        ].index(p)
        where, probs, _, text = data["rows"][i]
        bars = [
            [str(data["ids"][j]), data["tokens"][j], f"{v / data['scale']:.4f}"]
            for j, v in zip(where, probs, strict=True)
        ]
        return i, bars, data["continuations"][text]

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.screenshot(path=str(SCREENSHOTS / "decoding_view_before.png"))
    seen = []
    choices = ["1 off 1", "0.5 5 1", "1.5 20 0.9", "0 off 0.5", "1 off 0.5"]
    for t, k, p in map(str.split, choices):  # temperature, top-k, top-p
        for role, value in (("temperature", t), ("top-k", k), ("top-p", p)):
            view.locator(f'select[data-role="{role}"]').select_option(value)
        row, bars, text = expected(t, k, p)
        assert view.get_attribute("data-row") == str(row)
        assert shown_bars(view) == bars, (t, k, p)
        continuation = view.locator('[data-role="continuation"]').text_content()
        assert continuation == text, (t, k, p)
        seen.append((tuple(map(tuple, bars)), continuation))
        if t == "0":  # greedy: one bar, filled to the end of its track
            fill = view.locator(".llmbook-dec-fill").bounding_box()
            track = view.locator(".llmbook-dec-track").bounding_box()
            assert abs(fill["width"] - track["width"]) < 1
    assert len(set(seen)) == len(seen), "each setting should show its own picture"
    assert len(seen[1][0]) == 5 and len(seen[3][0]) == 1  # top-k 5; greedy
    view.screenshot(path=str(SCREENSHOTS / "decoding_view_after.png"))
    assert visit.errors == [] and visit.outside == []
    visit.page.close()
