"""The options every training command shares (``python -m llmbook.pretrain`` and
``python -m llmbook.pretrain_mlm``): train into ``--out`` or score ``--evaluate``, and
how the run uses the machine."""

from __future__ import annotations

import argparse

__all__ = ["training_parser"]


def training_parser(prog: str, description: str | None, evaluates: str) -> (
    argparse.ArgumentParser
):  # fmt: skip
    """A parser with ``--out DIR`` | ``--evaluate MODEL`` (one of them required;
    ``evaluates`` says what the evaluation prints), ``--steps``, ``--device``,
    ``--threads``, ``--fp32``, ``--resume`` and ``--quiet``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="directory for the trained model")
    target.add_argument(
        "--evaluate",
        metavar="MODEL",
        help=f"a shipped model's name or a saved directory: print {evaluates}",
    )
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument(
        "--device", default=None, help="cuda, mps or cpu (default: best)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="on the CPU train in fp32 even where the CPU has bf16 units (default: "
        "bf16 autocast there)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="resume from OUT/checkpoint.pt"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser
