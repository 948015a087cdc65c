"""The course's data is the same on every Python: the shipped corpus snapshot and the
shipped tokenizer give the token ids recorded in tests/data/course_ids.json (made on
CPython 3.11.7), here and under Python 3.10, 3.12 (Colab's) and 3.13.

The other interpreters come from pyenv; each gets a small virtual environment with
``tokenizers`` alone (the version pinned in requirements.txt, from the package
registry) and runs tests/portable_ids.py, which imports neither torch nor llmbook.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmbook.data.corpus import SNAPSHOT_PATH, SNAPSHOT_SHA256
from llmbook.data.splits import compute_course_splits, course_splits
from llmbook.model.pretrained import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
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
