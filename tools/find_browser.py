"""Find a Chromium for the browser tests and print its path.

Order: ``$LLMBOOK_BROWSER``; ``/usr/bin/chromium``; ``chromium``, ``chromium-browser``
or ``google-chrome`` on the PATH; Playwright's own Chromium if it is installed;
otherwise, when running as root with ``apt-get`` available (a CI container),
``apt-get install -y chromium``; failing that, ``playwright install chromium`` (a
download that works only where Playwright's servers can be reached). Exit status 1,
with one line on stderr saying why, when none can be had.

    python tools/find_browser.py              # may install (root + apt-get only)
    python tools/find_browser.py --no-install # only look

tests/book/test_browser.py calls :func:`find_browser` with ``install=False`` and skips when
it returns None, so ``make test`` can run this script first to install one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _looked_up() -> str | None:
    env = os.environ.get("LLMBOOK_BROWSER")
    if env:
        return env if os.access(env, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _playwright_chromium() -> str | None:
    """The Chromium that `playwright install` put in its cache, if there is one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as p:
            path = p.chromium.executable_path
    except Exception:  # no driver, or no browser downloaded
        return None
    return path if path and os.access(path, os.X_OK) else None


def why_not() -> str:
    """One line saying why no browser is available (for skip messages)."""
    env = os.environ.get("LLMBOOK_BROWSER")
    if env:
        return f"LLMBOOK_BROWSER={env} is not an executable file"
    return (
        "no Chromium found (/usr/bin/chromium, chromium/google-chrome on PATH, or "
        "Playwright's); run `python tools/find_browser.py` (as root it apt-get "
        "installs one), or set LLMBOOK_BROWSER"
    )


def find_browser(install: bool = False) -> str | None:
    """The path of a Chromium executable, or None.

    Args:
        install: when nothing is found, install one: Debian's ``chromium`` with
            apt-get when this process is root, else (or if that fails)
            Playwright's own download; then look again.
    """
    if os.environ.get("LLMBOOK_BROWSER"):
        return _looked_up()
    found = _looked_up() or _playwright_chromium()
    if found or not install:
        return found
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if is_root and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # apt's progress goes to stderr, so that stdout holds only the path
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "chromium"],
        ):
            subprocess.run(cmd, check=False, env=env, stdout=sys.stderr)
        found = _looked_up()
        if found:
            return found
    try:
        subprocess.run(
            [sys.executable, "-m", "playwright", "install", "chromium"],
            check=False,
            stdout=sys.stderr,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _playwright_chromium()


def main(argv: list[str]) -> int:
    path = find_browser(install="--no-install" not in argv)
    if path is None:
        print(why_not(), file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
