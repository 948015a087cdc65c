"""The book builds with zero warnings (-W -n --keep-going).

`make test` executes every notebook once, through nbval; so this build turns
execution off and checks everything else a build can warn about: the table of contents,
cross-references, citations, MyST syntax, and the pages' structure. `make book` is the
full build with execution.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_book_builds_without_warnings(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config_file = tmp_path / "_config.yml"
    config_file.write_text(yaml.safe_dump(config))
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    assert jb, "jupyter-book is not installed in this environment"
    result = subprocess.run(
        [
            jb,
            "build",
            str(ROOT),
            "-W",
            "-n",
            "--keep-going",
            "--config",
            str(config_file),
            "--path-output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    html = tmp_path / "out" / "_build" / "html"
    for page in ("book/intro.html", "chapters/03_attention.html"):
        assert (html / page).exists(), f"{page} was not built"
    chapter = (html / "chapters/03_attention.html").read_text()
    assert "colab.research.google.com" in chapter, "Colab launch button missing"
