"""Command line: the one command that rebuilds each artifact the package ships.

::

    python -m llmbook.recipes                      # every artifact and its command
    python -m llmbook.recipes course-mlm --out runs/course-mlm

Each shipped artifact in ``llmbook/weights/`` was made by a command of the course;
this module names them in one place and runs the one asked for into ``--out``, never
into the installed package (copy the result there yourself if you mean to replace
the shipped one). Timings are those recorded in each artifact's ``config.json``.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RECIPES", "Recipe", "main"]


@dataclass(frozen=True)
class Recipe:
    """How one shipped artifact is made: a module's command line, ``{out}`` standing
    for the output directory."""

    what: str
    argv: tuple[str, ...]
    module: str

    def command(self, out: str = "DIR") -> str:
        args = [a.replace("{out}", out) for a in self.argv]
        return shlex.join(["python", "-m", self.module, *args])


RECIPES: dict[str, Recipe] = {
    "course-gpt": Recipe(
        "the course GPT (Chapter 5)",
        ("--preset", "cpu", "--out", "{out}"),
        "llmbook.pretrain",
    ),
    "course-gpt-draft": Recipe(
        "the draft GPT of speculative decoding (Chapter 6)",
        ("--preset", "draft", "--fp32", "--threads", "1", "--out", "{out}"),
        "llmbook.pretrain",
    ),
    "course-mlm": Recipe(
        "the masked LM (Chapters 5-7)", ("--out", "{out}"), "llmbook.pretrain_mlm"
    ),
    "course-mt": Recipe(
        "the EN->zh translator (Chapter 9)",
        ("--out", "{out}", "--steps", "3000", "--threads", "1"),
        "llmbook.translate",
    ),
    "moe-study": Recipe(
        "dense vs mixture-of-experts runs (Chapter 10)",
        ("--out", "{out}/results.json"),
        "llmbook.moe_study",
    ),
    "docs-index": Recipe(
        "MiniLM embeddings of the documentation chunks (Chapter 12)",
        ("--out", "{out}"),
        "llmbook.apps.rag",
    ),
    "course-gpt-sft": Recipe(
        "the course GPT after LoRA instruction tuning (Chapter 7)",
        ("--out", "{out}"),
        "llmbook.finetune.sft",
    ),
    "course-gpt-rag": Recipe(
        "the reader: course-gpt-sft tuned to answer from a passage (Chapter 12)",
        ("--train-reader", "--threads", "1", "--out", "{out}"),
        "llmbook.apps.rag",
    ),
}


def _entry_point(module: str) -> Callable[[Sequence[str]], object]:
    """The ``main(argv)`` of a recipe's module."""
    if module == "llmbook.pretrain":
        from llmbook.pretrain import main
    elif module == "llmbook.pretrain_mlm":
        from llmbook.pretrain_mlm import main
    elif module == "llmbook.translate":
        from llmbook.translate.__main__ import main
    elif module == "llmbook.moe_study":
        from llmbook.moe_study import main
    elif module == "llmbook.finetune.sft":
        from llmbook.finetune.sft import main
    elif module == "llmbook.apps.rag":
        from llmbook.apps.rag import main
    else:  # pragma: no cover - RECIPES names only the modules above
        raise ValueError(f"no entry point for {module}")
    return main


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmbook.recipes [NAME --out DIR]``: list the recipes, or run one."""
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.recipes", description=main.__doc__
    )
    parser.add_argument("name", nargs="?", choices=sorted(RECIPES))
    parser.add_argument("--out", help="directory for the rebuilt artifact")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the command, run nothing"
    )
    args = parser.parse_args(argv)
    if args.name is None:
        for name, recipe in RECIPES.items():
            print(f"{name:17s} {recipe.what}\n{'':17s} {recipe.command()}")
        return
    recipe = RECIPES[args.name]
    if not args.out:
        parser.error("give --out DIR: a recipe never writes into the installed package")
    out = str(Path(args.out))
    print(recipe.command(out), flush=True)
    if not args.dry_run:
        _entry_point(recipe.module)([a.replace("{out}", out) for a in recipe.argv])


if __name__ == "__main__":
    main()
