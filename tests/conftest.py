"""Shared fixtures.

`built_book` builds the whole book once per test session, exactly as `make book` does
(`-W -n --keep-going`, executing chapters in cache mode), into a temporary folder. It
shares `_build/.jupyter_cache` with `make book` and with
tests/chapters/test_notebooks_execute.py, which fills that cache; so in `make test`, whose second
stage runs the book tests after the first has executed every notebook, the build only
renders. Set LLMBOOK_BOOK_HTML=/path/to/_build/html to test an existing build instead.

`lab_builds` builds each lab master once per test run, whichever module or xdist worker
asks first (tests/labs and the grading attack suite share the builds).

`hf_offline` keeps Hugging Face from reaching the hub in a module (use it with
``pytestmark = pytest.mark.usefixtures("hf_offline")``); `browser_context` is the headless
Chromium of the browser tests. Builders that tests call with arguments (a random GPT,
a local HTTP server) are in tests/helpers.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BookBuild:
    html: Path
    returncode: int
    log: str
    seconds: float


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BookBuild:
    given = os.environ.get("LLMBOOK_BOOK_HTML")
    if given:
        html = Path(given)
        assert (html / "index.html").exists(), f"LLMBOOK_BOOK_HTML={given}: no index"
        return BookBuild(html, 0, "", 0.0)
    out = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["cache"] = str(ROOT / "_build" / ".jupyter_cache")
    # The config is written elsewhere, and jupyter-book resolves local extension
    # folders from the config file's folder: make them absolute.
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in local.items():
        local[name] = str(ROOT / folder)
    config_file = out / "_config.yml"
    config_file.write_text(yaml.safe_dump(config))
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    assert jb, "jupyter-book is not installed in this environment"
    command = [jb, "build", str(ROOT), "-W", "-n", "--keep-going"]
    command += ["--config", str(config_file), "--path-output", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    print(f"book built in {seconds:.1f} s")
    return BookBuild(
        out / "_build" / "html",
        result.returncode,
        result.stdout + result.stderr,
        seconds,
    )


@pytest.fixture(scope="session")
def lab_builds(tmp_path_factory):
    """``build(master)``: tools/build_labs.py's build of a lab master, made once per
    test run. Under pytest-xdist every worker's temporary folder sits in the run's
    folder, so the builds go there, and a file lock per lab makes a second worker
    that asks for a lab wait for the first one's build instead of repeating it. The
    builds are read-only to the tests: copy a file before changing it."""
    from filelock import FileLock

    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    import build_labs

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "labs"
    root.mkdir(exist_ok=True)

    def build(master: Path) -> build_labs.LabBuild:
        record = root / f"{master.stem}.pickle"
        with FileLock(str(root / f"{master.stem}.lock")):
            if record.exists():
                return pickle.loads(record.read_bytes())
            made = build_labs.build_lab(master, root / master.stem)
            record.write_bytes(pickle.dumps(made))
            return made

    return build


@pytest.fixture
def tiny_hf_gpt2():
    """A randomly initialised Hugging Face GPT-2 (2 layers, d_model 48, vocab 100),
    built locally, with biases and LayerNorms perturbed so that copying them is
    tested too. Seeded: the same model every time."""
    import torch

    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=100, n_positions=64, n_embd=48, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
        eos_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(7)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return hf


@pytest.fixture(scope="module")
def hf_offline():
    """Hugging Face offline for a whole test module: ``HF_HUB_OFFLINE=1`` in the
    environment and in ``huggingface_hub.constants`` (which read it at import time),
    so that nothing is downloaded and a missing file fails at once."""
    import huggingface_hub.constants as hf_constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        yield


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """A headless Chromium driven by Playwright, one per test module, with a fresh,
    empty profile (user-data-dir) and a 1280 x 900 viewport. Skips when this machine
    has no Chromium (see tools/find_browser.py) or no Playwright."""
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    from find_browser import find_browser, why_not

    browser = find_browser(install=False)
    if browser is None:
        pytest.skip(f"browser tests skipped: {why_not()}")
    playwright_api = pytest.importorskip(
        "playwright.sync_api",
        reason="browser tests skipped: playwright is not installed",
    )
    with playwright_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=browser,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield ctx
        ctx.close()


# `make test` runs `pytest -n 2 --dist loadscope`: every test module (or test class)
# goes to one worker as a unit, so module-scoped fixtures, such as a lab graded once,
# are built by one worker only. tests/chapters/test_notebooks_execute.py has one class per
# chapter, so the chapters execute on both workers at once, and nbval's cells of one
# lab master (solutions/*.ipynb) stay together in one kernel. (pytest 9 ignores the
# node-id suffix with which `--dist loadgroup` groups tests: every test became its own
# unit.) xdist 3.8 then orders the units by their number of tests, most first (its
# default --loadscope-reorder), keeping the order below among equals: the lab
# self-tests start at once, and the one-test units come last, the chapters slowest
# first, then the lab masters. Keeping the collection order instead
# (--no-loadscope-reorder, chapters first) measured slower on a clean clone: Chapter 5
# then ran beside the lab grading (185 s), and stage 1 took 1,174 s against 1,141 s.
SLOW_NOTEBOOKS = ("05_pretraining", "07_finetuning", "12_applications", "01_introduction",
                  "06_decoding", "04_transformer", "08_evaluation", "09_translation",
                  "13_responsible_ai", "02_data")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    def rank(item):
        if item.__class__.__name__ == "IPyNbCell":  # nbval: a cell of a lab master
            return (1, 0)
        if item.module.__name__ != "test_notebooks_execute":
            return (2, 0)
        name = item.cls.__name__ if item.cls is not None else ""
        slow = [i for i, n in enumerate(SLOW_NOTEBOOKS) if n in name]
        return (0, slow[0] if slow else len(SLOW_NOTEBOOKS))

    items.sort(key=rank)  # stable: the order within each group is kept
