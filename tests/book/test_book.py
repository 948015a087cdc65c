"""The book builds with zero warnings (`-W -n --keep-going`), with every page in place.

Uses the session's one build (tests/conftest.py). Marked `book`: `make test` runs these
after the notebooks have executed, so the build reuses their results from the cache.
"""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_setup  # noqa: E402

pytestmark = [pytest.mark.book]


def test_book_builds_without_warnings(built_book):
    assert built_book.returncode == 0, built_book.log[-5000:]
    warnings = [ln for ln in built_book.log.splitlines() if re.search(r"WARNING:", ln)]
    assert warnings == [], "\n".join(warnings)


@pytest.mark.parametrize("page", notebook_setup.toc_notebooks())
def test_notebook_pages_have_a_colab_button(built_book, page):
    html = (built_book.html / f"{page}.html").read_text()
    assert "colab.research.google.com/github/" in html and f"{page}.ipynb" in html


def test_every_toc_page_is_built(built_book):
    pages = ("book/intro", "book/setup", "book/instructors", "book/bibliography",
             "book/seed_map", "book/errata")  # fmt: skip
    for page in pages:
        assert (built_book.html / f"{page}.html").exists(), page
