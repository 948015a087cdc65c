"""``python -m llmbook.recipes``: one command per shipped artifact, never writing into
the package, and each command the one the artifact's own metadata records."""

from __future__ import annotations

import json
import shlex

import pytest

from llmbook import recipes
from llmbook.model import pretrained_metadata
from llmbook.model.pretrained import WEIGHTS_DIR


def test_every_shipped_artifact_has_a_recipe():
    shipped = {p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").exists()}
    shipped |= {p.parent.name for p in WEIGHTS_DIR.glob("*/results.json")}
    assert shipped == set(recipes.RECIPES)


def test_listing_and_dry_run(capsys):
    recipes.main([])
    listing = capsys.readouterr().out
    for name, recipe in recipes.RECIPES.items():
        assert name in listing and recipe.command() in listing
    recipes.main(["course-mlm", "--out", "runs/x y", "--dry-run"])
    assert shlex.split(capsys.readouterr().out) == [
        "python", "-m", "llmbook.pretrain_mlm", "--out", "runs/x y"
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        recipes.main(["course-gpt"])  # no --out: never into the package
    for recipe in recipes.RECIPES.values():
        assert callable(recipes._entry_point(recipe.module))


def test_commands_match_what_the_artifacts_record():
    gpt = pretrained_metadata("course-gpt")["results"]
    assert gpt["preset"] == "cpu" and gpt["autocast"] == "bfloat16"
    assert "--fp32" not in recipes.RECIPES["course-gpt"].argv
    draft = pretrained_metadata("course-gpt-draft")["results"]
    assert draft["preset"] == "draft" and draft["threads"] == 1
    argv = recipes.RECIPES["course-gpt-draft"].argv
    assert argv[argv.index("--threads") + 1] == "1" and "--fp32" in argv
    mt = json.loads((WEIGHTS_DIR / "course-mt" / "config.json").read_text())
    recorded = shlex.split(mt["command"])
    ours = shlex.split(recipes.RECIPES["course-mt"].command("OUT"))
    assert recorded[:3] == ours[:3] == ["python", "-m", "llmbook.translate"]
    for flag in ("--steps", "--threads"):
        assert recorded[recorded.index(flag) + 1] == ours[ours.index(flag) + 1]
    study = json.loads((WEIGHTS_DIR / "moe-study" / "results.json").read_text())
    assert study["command"].startswith("python -m llmbook.moe_study")
    sft = pretrained_metadata("course-gpt-sft")["results"]
    assert sft["made_by"].startswith("python -m llmbook.finetune.sft")
    assert recipes.RECIPES["course-gpt-sft"].module == "llmbook.finetune.sft"
    reader = pretrained_metadata("course-gpt-rag")["results"]
    assert reader["made_by"].startswith("python -m llmbook.apps.rag --train-reader")
    assert reader["torch_threads"] == 1
    assert "--train-reader" in recipes.RECIPES["course-gpt-rag"].argv
    index = json.loads((WEIGHTS_DIR / "docs-index" / "config.json").read_text())
    assert index["made_by"].startswith("python -m llmbook.apps.rag")


def test_every_recipe_command_starts_cleanly():
    """Each recipe's module runs as ``python -m`` without Python's warning that the
    package had imported it already (it would be loaded twice), here with --help."""
    import subprocess
    import sys

    modules = sorted({recipe.module for recipe in recipes.RECIPES.values()})
    for module in modules:
        result = subprocess.run(
            [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, (module, result.stderr[-2000:])
        assert "usage" in result.stdout.lower(), (module, result.stdout[:500])
