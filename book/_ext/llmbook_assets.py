"""Sphinx extension for the book: write each inline script into a page only once.

Sphinx 7.4 puts an inline script (``app.add_js_file(None, body=...)``) that an
extension registers after the HTML builder was initialised into every page twice:
``Sphinx.add_js_file`` hands it to the builder as ``_JavaScript(None, body=...)``, and
``StandaloneHTMLBuilder.prepare_writing`` adds the registry's scripts again as
``_JavaScript("", body=...)``; ``None != ""``, so the builder's duplicate check misses
it. sphinx-thebe (its configuration script, at ``env-before-read-docs``) and
sphinx-togglebutton (at ``builder-inited``) both register that late. Togglebutton's
copy declares a ``var`` and is harmless; thebe's declares ``const THEBE_JS_URL``, and
the second copy throws "Identifier 'THEBE_JS_URL' has already been declared" in the
browser console of every page. This drops the second copy before the page is written.
"""

from __future__ import annotations

from typing import Any


def _key(script: Any) -> tuple:
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {})
    return (
        str(filename),
        getattr(script, "priority", 500),
        *sorted(attributes.items()),
    )


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # the builder's own list: it restores it before the next page


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
