"""Keep what is derived from `_config.yml` in step with it.

The repository URL lives only in `_config.yml`. Two things are generated from it:
the Colab install line of every notebook's setup cell (the code cell tagged `setup`;
its tags are SETUP_TAGS, so the book shows it as one collapsed toggle), and the
chapter/lab map with Colab links in README.md (between the `map:start` and
`map:end` markers, built from `_toc.yml`). `python tools/notebook_setup.py sync`
rewrites both; `python tools/notebook_setup.py check` (run by `make test`) reports
anything that disagrees.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("chapters", "solutions")

TEMPLATE = """\
# Setup: on Colab install the course package; everywhere seed, pick a device, print
# versions. (Generated from _config.yml by tools/notebook_setup.py; do not edit.)
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "{spec}"],
        check=True,
    ){no_deps}
    old = sys.modules.get("transformers")  # imported before this cell, then upgraded?
    new = subprocess.run([sys.executable, "-c", "import transformers as t; print(t.__version__)"],
                         capture_output=True, text=True).stdout.strip()
    if old is not None and old.__version__ != new:
        raise SystemExit("transformers was upgraded after it was imported: choose "
                         "Runtime > Restart session, then run this cell again")

from llmbook.utils import setup

device = setup(seed=0)"""


# Tags of the setup cell: `setup` finds it; `hide-cell` renders it in the book as one
# collapsed "Show code cell content" toggle (input and output hidden until clicked).
SETUP_TAGS = ["setup", "hide-cell"]
# Visibility tags the setup cell must not carry besides `hide-cell`.
OTHER_HIDE_TAGS = ("hide-input", "hide-output", "remove-input", "remove-output")

MAP_START, MAP_END = "<!-- map:start -->", "<!-- map:end -->"


def repository() -> tuple[str, str]:
    """(url, branch) from `_config.yml`."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


# The labs' checker, installed without its dependencies. otter-grader's own list pulls
# in what only an instructor's machine uses (playwright for PDF export, Sphinx through
# fica, python-on-whales for Docker grading), about 260 MB on every fresh Colab runtime;
# what `import otter` and `grader.check` need at run time is the `labs` extra of
# pyproject.toml, installed with the course package just before.
NO_DEPS_TEMPLATE = """
    subprocess.run(  # the labs' checker; its run-time needs come with llmbook[labs]
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", {packages}],
        check=True,
    )"""
NO_DEPS = ("otter-grader", "fica")


def pinned(name: str) -> str:
    """`name==version` as constraints.txt pins it (the version the course tests)."""
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec.split("==", 1)[0].strip().lower() == name:
            return spec
    raise ValueError(f"constraints.txt pins no version of {name}")


def setup_source(extra: str = "") -> str:
    """The setup cell's source; `extra` is a pip extra such as "labs"."""
    url, branch = repository()
    name = f"llmbook[{extra}]" if extra else "llmbook"
    no_deps = ""
    if extra == "labs":
        packages = ", ".join(f'"{pinned(n)}"' for n in NO_DEPS)
        no_deps = NO_DEPS_TEMPLATE.format(packages=packages)
    return TEMPLATE.format(spec=f"{name} @ git+{url}@{branch}", no_deps=no_deps)


def toc_notebooks() -> list[str]:
    """Paths (no suffix) of the notebooks in `_toc.yml`, in book order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    return [f for f in files if (ROOT / f"{f}.ipynb").exists()]


def notebook_title(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def readme_map() -> str:
    """The README's chapter/lab table with Colab links."""
    url, branch = repository()
    github = url.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{github}/blob/{branch}"
    rows = ["| Notebook | Open |", "|---|---|"]
    for f in toc_notebooks():
        title = notebook_title(ROOT / f"{f}.ipynb")
        rows.append(f"| [{title}]({f}.ipynb) | [Colab]({colab}/{f}.ipynb) |")
    return "\n".join([MAP_START, *rows, MAP_END])


def readme_with_map(text: str) -> str:
    head, _, rest = text.partition(MAP_START)
    _, _, tail = rest.partition(MAP_END)
    return head + readme_map() + tail


def expected_source(path: Path) -> str:
    return setup_source("labs" if path.parent.name == "solutions" else "")


def setup_cells(nb) -> list:
    return [c for c in nb.cells if "setup" in c.get("metadata", {}).get("tags", [])]


def notebooks() -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


def problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    cells = setup_cells(nb)
    if len(cells) != 1:
        return [
            f"{path.name}: expected exactly one cell tagged 'setup', found {len(cells)}"
        ]
    found = []
    if cells[0].source != expected_source(path):
        found.append(
            f"{path.name}: setup cell differs from the template (run `make sync`)"
        )
    if setup_tags(cells[0]) != cells[0].metadata.get("tags", []):
        found.append(
            f"{path.name}: setup cell tags are not {SETUP_TAGS} (run `make sync`)"
        )
    return found


def setup_tags(cell) -> list[str]:
    """The setup cell's tags: SETUP_TAGS first, then any others it had."""
    tags = cell.metadata.get("tags", [])
    rest = [t for t in tags if t not in SETUP_TAGS and t not in OTHER_HIDE_TAGS]
    return SETUP_TAGS + rest


def sync(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    cells = setup_cells(nb)
    if len(cells) != 1:
        return False
    cell = cells[0]
    source, tags = expected_source(path), setup_tags(cell)
    if cell.source == source and cell.metadata.get("tags", []) == tags:
        return False
    cell.source = source
    cell.metadata["tags"] = tags
    nbformat.write(nb, path)
    return True


def readme_problems() -> list[str]:
    text = (ROOT / "README.md").read_text()
    if MAP_START not in text or MAP_END not in text:
        return [f"README.md: missing the {MAP_START} ... {MAP_END} markers"]
    if readme_with_map(text) != text:
        return ["README.md: chapter/lab map is out of date (run `make sync`)"]
    return []


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    if command == "sync":
        for path in notebooks():
            if sync(path):
                print(f"updated {path.relative_to(ROOT)}")
        readme = ROOT / "README.md"
        readme.write_text(readme_with_map(readme.read_text()))
        return 0
    if command == "check":
        found = [msg for path in notebooks() for msg in problems(path)]
        found += readme_problems()
        print("\n".join(found) or "setup cells and README map are in sync")
        return 1 if found else 0
    print(f"unknown command {command!r}: use sync or check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
