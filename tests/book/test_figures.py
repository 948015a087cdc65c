"""The conceptual figures in book/figures/ are exactly what tools/draw_figures.py draws."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIG_DIR = ROOT / "book" / "figures"
TOOL = ROOT / "tools" / "draw_figures.py"
sys.path.insert(0, str(ROOT / "tools"))
import draw_figures  # noqa: E402

NAMES = sorted(draw_figures.FIGURES)
COMMITTED = sorted(p.stem for p in FIG_DIR.glob("*.svg"))


def chapter_markdown() -> dict[str, str]:
    text = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text[path.name] = "\n".join(
            c.source for c in nb.cells if c.cell_type == "markdown"
        )
    return text


@pytest.fixture(scope="module")
def redrawn(tmp_path_factory):
    """Run the tool as a reader would, in a fresh process, into a temporary folder."""
    out = tmp_path_factory.mktemp("figures")
    subprocess.run(
        [sys.executable, str(TOOL), str(out)], check=True, capture_output=True
    )
    return out


def test_the_tool_draws_exactly_the_committed_set():
    assert NAMES == COMMITTED
    assert len(NAMES) == 6


@pytest.mark.parametrize("name", NAMES)
def test_committed_svg_is_what_the_code_draws(name, redrawn):
    fresh = (redrawn / f"{name}.svg").read_bytes()
    committed = (FIG_DIR / f"{name}.svg").read_bytes()
    assert fresh == committed, (
        f"{name}.svg is stale: run `python tools/draw_figures.py` and commit the result"
    )


def test_drawing_twice_in_one_process_is_byte_identical(tmp_path):
    first = draw_figures.draw_all(tmp_path / "a")
    second = draw_figures.draw_all(tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.parametrize("name", COMMITTED)
def test_svg_is_well_formed_and_has_no_date(name):
    path = FIG_DIR / f"{name}.svg"
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert float(root.get("width").removesuffix("pt")) > 100
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 20, "empty?"
    assert "<dc:date>" not in path.read_text()


@pytest.mark.parametrize("name", COMMITTED)
def test_every_figure_is_shown_in_a_chapter_with_alt_text(name):
    pattern = re.compile(
        r"```\{figure\} \.\./book/figures/" + re.escape(name) + r"\.svg\n"
        r"(?P<options>(?::\w+:[^\n]*\n)+)\n(?P<caption>.+?)\n```",
        re.S,
    )
    hits = {
        chapter: m
        for chapter, text in chapter_markdown().items()
        if (m := pattern.search(text))
    }
    assert hits, f"{name}.svg is not referenced from any chapter"
    for chapter, m in hits.items():
        options = dict(
            re.match(r":(\w+):\s*(.*)", line).groups()
            for line in m["options"].splitlines()
        )
        assert options.get("name", "").startswith("fig-"), chapter
        assert len(options.get("alt", "")) > 40, f"{chapter}: alt text for {name}"
        assert len(m["caption"].split()) > 15, f"{chapter}: caption for {name}"


def test_figure_names_are_unique_and_cross_references_resolve():
    text = "\n".join(chapter_markdown().values())
    names = re.findall(r"^:name: (fig-[\w-]+)$", text, re.M)
    assert len(names) == len(set(names)), names
    for ref in re.findall(r"\{numref\}`(?:[^`<]*<)?(fig-[\w-]+)>?`", text):
        assert ref in names, f"{{numref}} to unknown figure {ref}"


def test_bad_output_folder_is_rejected(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        draw_figures.draw_all(blocker)
