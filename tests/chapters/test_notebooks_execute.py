"""Execute every chapter notebook exactly once per `make test`.

Each notebook is run top to bottom by the executor Jupyter Book itself uses
(jupyter-cache's ``single_nb_execution``, in the notebook's folder). A cell that raises
fails the test with its traceback. Cells whose first line is ``# NBVAL_CHECK_OUTPUT``
must print what the notebook has stored for them, after the substitutions in
``tests/sanitize.cfg`` (timings, addresses). In the chapters listed in
``tests/data/prose_figures.yml``, every number the prose states must appear in the
outputs of this run (tests/prose_figures.py).

Chapters are then written into the book's execution cache (``_build/.jupyter_cache``),
so the book build that follows (`make test`'s second stage, or `make book`) renders
these results instead of executing the chapters a second time.

The lab masters in ``solutions/`` are not run here: `make test` hands them to nbval
itself (``pytest --nbval-lax solutions``, with the same sanitize file), and
tests/conftest.py keeps each master's cells on one worker.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution
from prose_figures import bound_chapters, unbound_figures

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "_build" / ".jupyter_cache"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
TIMEOUT_S = 600
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def sanitizers() -> list[tuple[re.Pattern, str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "tests" / "sanitize.cfg")
    return [
        (re.compile(config[s]["regex"]), config[s]["replace"])
        for s in config.sections()
    ]


def text_outputs(cell, rules) -> list[str]:
    """A cell's printed text and plain-text results, sanitized."""
    texts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            texts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            texts.append(out.get("data", {}).get("text/plain", ""))
        elif out.output_type == "error":
            texts.append(f"{out.ename}: {out.evalue}")
    text = "".join(texts)
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text.rstrip().splitlines()


def store_in_book_cache(executed: nbformat.NotebookNode, path: Path, seconds: float):
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE) + ".lock"):  # two test workers share one SQLite cache
        get_cache(str(CACHE)).cache_notebook_bundle(
            CacheBundleIn(executed, str(path), data={"execution_seconds": seconds}),
            check_validity=False,
            overwrite=True,
        )


def execute_and_check(path: Path) -> None:
    stored = nbformat.read(path, as_version=4)
    notebook = nbformat.read(path, as_version=4)
    result = single_nb_execution(
        notebook,
        cwd=str(path.parent),
        allow_errors=False,
        timeout=TIMEOUT_S,
        meta_override=True,
    )
    if result.err is not None:
        pytest.fail(f"{path.name} failed to execute:\n{result.exc_string}", False)

    rules = sanitizers()
    for index, (before, after) in enumerate(
        zip(stored.cells, notebook.cells, strict=True)
    ):
        if after.cell_type != "code" or not after.source.startswith(CHECK_MARK):
            continue
        assert text_outputs(after, rules) == text_outputs(before, rules), (
            f"{path.name}, cell {index}: output differs from the stored one "
            "(re-run the notebook and save it if the change is intended)"
        )
    if path.stem in bound_chapters():
        unbound = unbound_figures(notebook, path.stem)
        assert not unbound, (
            f"{path.name}: figures in the prose that no output of this run shows "
            f"(cell index, figure): {unbound}; bind them to the output, or list a "
            "number that is not a result in tests/data/prose_figures.yml"
        )
    store_in_book_cache(notebook, path, result.time)


# One test class per chapter (TestChapter_05_pretraining, ...), not one parametrized
# function: `make test` runs `pytest -n 2 --dist loadscope`, which sends each class to
# a worker as a unit, so the chapters spread over both workers while every other test
# module stays whole on one (its module-scoped fixtures are built once).
def _chapter_class(path: Path) -> type:
    def test_executes(self):
        execute_and_check(path)

    return type(f"TestChapter_{path.stem}", (), {"test_executes": test_executes})


for _path in NOTEBOOKS:
    _cls = _chapter_class(_path)
    globals()[_cls.__name__] = _cls
del _path, _cls
