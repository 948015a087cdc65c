"""The two fixes for console errors that every rendered page used to log.

1. ``book/_ext/llmbook_assets.py`` writes each inline script once per page. Sphinx 7.4
   adds a script registered after the builder's start both as ``_JavaScript(None,
   body=...)`` and as ``_JavaScript("", body=...)``, so sphinx-thebe's
   ``const THEBE_JS_URL`` was declared twice (a SyntaxError in the browser).
2. ``_config.yml`` gives pydata-sphinx-theme a default colour mode; without it the theme
   logs "Got invalid theme mode: ." on a visitor's first page.

The browser test (tests/book/test_browser.py) checks the rendered pages; these checks need
no build and no browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from sphinx.builders.html._assets import _JavaScript

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import llmbook_assets  # noqa: E402

THEBE = 'const THEBE_JS_URL = "x"'


def page(scripts):
    context = {"script_files": scripts}
    llmbook_assets.drop_duplicate_scripts(None, "p", "page.html", context, None)
    return context["script_files"]


def test_a_late_inline_script_is_written_once():
    # What Sphinx 7.4 holds for a page: the late copy (None) and the re-added one ("").
    scripts = [
        _JavaScript("_static/doctools.js", priority=200),
        _JavaScript(None, priority=500, body=THEBE),
        _JavaScript("_static/sphinx-thebe.js", priority=500, **{"async": "async"}),
        _JavaScript("", priority=500, body=THEBE),
    ]
    assert scripts[1] != scripts[3]  # the Sphinx behaviour the extension works around
    kept = page(list(scripts))
    assert [s.attributes.get("body") for s in kept].count(THEBE) == 1
    assert kept == scripts[:3]  # order kept, first copy kept


def test_different_scripts_are_all_kept():
    scripts = [
        _JavaScript(None, body="var a = 1"),
        _JavaScript("", body="var b = 2"),
        _JavaScript("", body="var a = 1", priority=800),  # another priority: distinct
        _JavaScript("_static/a.js"),
        _JavaScript("_static/a.js", defer="defer"),
    ]
    assert page(list(scripts)) == scripts


def test_the_list_is_changed_in_place():
    scripts = [_JavaScript(None, body=THEBE), _JavaScript("", body=THEBE)]
    same = scripts
    page(scripts)
    assert same is scripts and len(scripts) == 1


def test_config_loads_the_extension_and_sets_a_colour_mode():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]
    path = sphinx["local_extensions"]["llmbook_assets"]
    assert (ROOT / path / "llmbook_assets.py").exists()
    mode = sphinx["config"]["html_context"]["default_mode"]
    assert mode in {"light", "dark", "auto"}, mode
