"""The course's data is the same on every Python: the shipped corpus snapshot and the
shipped tokenizer give the token ids recorded in tests/data/course_ids.json (made on
CPython 3.11.7), here and under Python 3.10, 3.12 (Colab's) and 3.13.

The other interpreters come from pyenv; each gets a small virtual environment with
``tokenizers`` alone (the version pinned in requirements.txt, from the package
registry) and runs tests/portable_ids.py, which imports neither torch nor llmbook.

Two chapter results used to depend on the interpreter, and are checked here too:
Chapter 13's string probe labels (tests/portable_labels.py, run by each interpreter
directly: standard library only) and Chapter 12's doctest tasks (each check script,
which carries the snapshot's module source, run with ``-I -S`` by each interpreter).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from llmbook.data.corpus import SNAPSHOT_PATH, SNAPSHOT_SHA256
from llmbook.data.splits import compute_course_splits, course_splits
from llmbook.model.pretrained import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tests" / "portable_ids.py"
EXPECTED = json.loads((ROOT / "tests" / "data" / "course_ids.json").read_text())
TOKENIZER = WEIGHTS_DIR / "course-gpt" / "tokenizer.json"


def _summary_here() -> dict:
    spec = importlib.util.spec_from_file_location("portable_ids", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.summary(str(SNAPSHOT_PATH), str(TOKENIZER))


def test_snapshot_and_shipped_tokenizer_give_the_recorded_ids():
    assert EXPECTED["snapshot_sha256"] == SNAPSHOT_SHA256
    assert _summary_here() == EXPECTED


def test_stored_split_is_what_the_pipeline_computes_on_3_11():
    if sys.version_info[:3] != (3, 11, 7):
        pytest.skip("the snapshot was made on CPython 3.11.7")
    assert compute_course_splits("python") == course_splits("python")


def _pinned_tokenizers() -> str:
    text = (ROOT / "requirements.txt").read_text()
    return re.search(r"^tokenizers==(\S+)", text, re.M).group(1)


def _pyenv_python(version: str) -> str | None:
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python3"))
    return found[-1] if found else None


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_other_pythons_see_the_same_ids(version, tmp_path_factory):
    python = _pyenv_python(version)
    if python is None:
        pytest.skip(f"no Python {version} under pyenv on this machine")
    env_dir = tmp_path_factory.mktemp(f"py{version}")
    subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=120)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run(
        [*pip, "--disable-pip-version-check", f"tokenizers=={_pinned_tokenizers()}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"pip install tokenizers failed: {done.stderr[-2000:]}"
    run = subprocess.run(
        [str(env_dir / "bin" / "python"), str(SCRIPT), str(SNAPSHOT_PATH), str(TOKENIZER)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == EXPECTED


# Chapter 13's string probe and Chapter 12's doctest tasks: labels and checks come
# from the snapshot's text, so they agree with CPython 3.11.7 on other interpreters.

LABELS = ROOT / "tests" / "portable_labels.py"
STRINGS_PY = ROOT / "src" / "llmbook" / "responsible" / "strings.py"


def _labels(python: str) -> dict:
    run = subprocess.run(
        [python, str(LABELS), str(SNAPSHOT_PATH), str(STRINGS_PY)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    del out["python"]
    return out


def test_string_spans_equal_the_3_11_string_tokens():
    """On 3.11, where an f-string is one STRING token, the spans are exactly the
    tokenizer's STRING tokens; the snapshot has f-strings, so merging matters."""
    import io
    import tokenize

    from llmbook.data import load_corpus
    from llmbook.responsible.strings import string_spans

    if sys.version_info[:2] != (3, 11):
        pytest.skip("the reference labels are 3.11's STRING tokens")
    sources = load_corpus("source", min_chars=0)
    assert sum('f"' in s or "f'" in s for s in sources) > 20
    for src in sources[::7]:
        starts = [0]
        for line in src.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        tokens = tokenize.generate_tokens(io.StringIO(src).readline)
        expected = [
            (starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1])
            for t in tokens
            if t.type == tokenize.STRING
        ]
        assert string_spans(src) == expected


def test_string_spans_merge_a_3_12_fstring():
    from llmbook.responsible.strings import string_spans, window_outside_strings

    src = 'x = f"a{y!r:>{w}} {f\'{z}\'}" + "b"\n"""doc\nstill doc\n"""\nq = 1\n'
    assert string_spans(src) == [(4, 27), (30, 33), (34, 54)]
    assert window_outside_strings(string_spans(src), 36, src) == 55
    with pytest.raises(ValueError, match="cannot tokenize"):
        string_spans('s = """never closed\n')


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_other_pythons_label_strings_alike(version):
    python = _pyenv_python(version)
    if python is None:
        pytest.skip(f"no Python {version} under pyenv on this machine")
    assert _labels(python) == _labels(sys.executable)


def _doctest_outcomes(python: str) -> list:
    """(module, name, reference passes, `return None` fails) for every doctest task,
    each script run by `python` as the chapter's sandbox runs it (-I -S)."""
    from llmbook.apps.codechecks import doctest_check, doctest_tasks
    from llmbook.data import load_corpus
    from llmbook.data.corpus import STDLIB_MODULES

    def report(script):
        run = subprocess.run([python, "-I", "-S", "-c", script], capture_output=True,
                             text=True, timeout=60, cwd=tempfile.gettempdir())  # fmt: skip
        return json.loads(run.stdout) if run.returncode == 0 else None

    outcomes = []
    for task in doctest_tasks(load_corpus("source", min_chars=0), STDLIB_MODULES):
        indent = task.body[: len(task.body) - len(task.body.lstrip())]
        good = report(doctest_check(task, task.body))
        bad = report(doctest_check(task, indent + "return None"))
        outcomes.append((task.module, task.name, good, bad))
    return outcomes


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_doctest_tasks_run_alike_on_other_pythons(version):
    python = _pyenv_python(version)
    if python is None:
        pytest.skip(f"no Python {version} under pyenv on this machine")
    here = _doctest_outcomes(sys.executable)
    sound = [
        o for o in here if o[2] and o[2]["failed"] == 0 and o[3] and o[3]["failed"]
    ]
    assert len(sound) == 6  # Chapter 12 states six tasks
    assert ("zipfile", "_parents") in {(m, n) for m, n, _, _ in sound}  # gone in 3.12
    assert _doctest_outcomes(python) == here
