"""House-style checks on the notebooks and on what is generated from _config.yml."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_setup  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def test_generated_parts_are_in_sync():
    problems = [
        m for p in notebook_setup.notebooks() for m in notebook_setup.problems(p)
    ]
    assert problems + notebook_setup.readme_problems() == []


def test_repository_url_lives_in_one_place():
    url, _ = notebook_setup.repository()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    allowed = {"_config.yml", "README.md"}  # README's map is generated and checked
    generated = {"chapters", "solutions", "labs"}  # setup cells, checked above
    offenders = [
        f
        for f in tracked
        if f not in allowed
        and Path(f).parts[0] not in generated
        and (ROOT / f).is_file()
        and url in (ROOT / f).read_text(errors="ignore")
    ]
    assert offenders == [], (
        f"repository URL hard-coded outside _config.yml: {offenders}"
    )


def test_every_notebook_is_in_the_toc():
    in_toc = set(notebook_setup.toc_notebooks())
    for folder in ("chapters", "labs"):
        for path in (ROOT / folder).glob("*.ipynb"):
            assert f"{folder}/{path.stem}" in in_toc, (
                f"{path.name} missing from _toc.yml"
            )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or cell.source.startswith(CHECK_MARK):
            continue
        assert not cell.outputs, f"{path.name} cell {i} has stored outputs"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opening_and_skeleton(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{path.name} must open with a markdown title"
    )
    opening = first.source.lower()
    assert "objective" in opening or "you will" in opening, "learning objectives"
    assert "seed" in opening, "the opening must say which seed sections it covers"
    setup = notebook_setup.setup_cells(nb)[0]
    assert nb.cells.index(setup) <= 2, "the setup cell comes right after the opening"
    assert "hide-cell" in setup.metadata.get("tags", []), "setup renders as one toggle"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    for heading in ("summary", "exercises"):
        assert f"# {heading}" in text or f"## {heading}" in text, heading


def test_toc_and_config_are_valid_yaml():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert toc["format"] == "jb-book"
    assert config["execute"]["execute_notebooks"] == "cache"
