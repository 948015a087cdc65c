"""Saving and loading trained models: the course's own layout (Chapter 5).

``save_pretrained`` writes ``config.json``, ``model.safetensors`` and, with a
tokenizer, ``tokenizer.json`` (the Hugging Face layout); ``from_pretrained`` loads a
directory or a model shipped with the package (in ``llmbook/weights/``: the course
GPT ``"course-gpt"``, its small draft ``"course-gpt-draft"``, the masked-LM encoder
``"course-mlm"``), and ``load_tokenizer`` its tokenizer as a ``transformers`` fast
tokenizer. ``config.json``'s ``"architecture"`` says which class to build
(``"GPT"`` when absent). ``config.json`` records the tokenizer's vocabulary size and the
SHA-256 of its ``tokenizer.json``: a model and a tokenizer that do not belong
together are an error, never a silent run on garbage ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from llmbook.data.tokenization import EOS_TOKEN, MASK_TOKEN
from llmbook.model.bert import EncoderConfig, MaskedLM
from llmbook.model.gpt import GPT, GPTConfig
from llmbook.model.hf import save_hf

__all__ = [
    "WEIGHTS_DIR",
    "save_pretrained",
    "from_pretrained",
    "load_tokenizer",
    "saved_tokenizer",
    "tokenizer_path",
    "pretrained_metadata",
    "export_hf",
]

#: The classes ``from_pretrained`` builds, by ``config.json``'s "architecture".
ARCHITECTURES = {"GPT": (GPT, GPTConfig), "MaskedLM": (MaskedLM, EncoderConfig)}

#: Where the models that ship with the package live.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def _resolve(name_or_path: str | Path) -> Path:
    directory = Path(name_or_path)
    return directory if directory.is_dir() else WEIGHTS_DIR / str(name_or_path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_pretrained(
    model: GPT | MaskedLM,
    directory: str | Path,
    metadata: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (given a ``tokenizers``
    ``Tokenizer``) ``tokenizer.json``; the config records the model's class and
    which tokenizer it is."""
    architecture = type(model).__name__
    if architecture not in ARCHITECTURES:
        raise TypeError(f"expected one of {sorted(ARCHITECTURES)}, got {architecture}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architecture": architecture, "model": asdict(model.config),
              **(metadata or {})}  # fmt: skip
    if tokenizer is not None:
        size = tokenizer.get_vocab_size()
        if size != model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {size} tokens but the model's vocab_size is "
                f"{model.config.vocab_size}: they do not belong together"
            )
        tokenizer.save(str(directory / "tokenizer.json"))
        config["tokenizer"] = {
            "file": "tokenizer.json",
            "vocab_size": size,
            "sha256": _sha256(directory / "tokenizer.json"),
        }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight", None)  # tied to tok_emb.weight: stored once
    save_file(state, str(directory / "model.safetensors"))
    return directory


def from_pretrained(
    name_or_path: str | Path = "course-gpt", device: str | torch.device = "cpu"
) -> GPT | MaskedLM:
    """Load a model saved by :func:`save_pretrained`: a name shipped with the package
    (``"course-gpt"``, ``"course-gpt-draft"``, ``"course-mlm"``) or a directory.
    Returns a ``GPT`` or a ``MaskedLM`` (as ``config.json`` says), in eval mode."""
    directory = _resolve(name_or_path)
    config_file = directory / "config.json"
    weights_file = directory / "model.safetensors"
    for needed in (config_file, weights_file):
        if not needed.exists():
            shipped = (
                sorted(p.name for p in WEIGHTS_DIR.iterdir())
                if WEIGHTS_DIR.is_dir()
                else []
            )
            raise FileNotFoundError(
                f"{needed} not found; give a directory written by save_pretrained or "
                f"one of the shipped models {shipped} (make one with "
                f"`python -m llmbook.pretrain --preset cpu --out DIR`)"
            )
    meta = json.loads(config_file.read_text())
    architecture = meta.get("architecture", "GPT")  # files older than the field
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"{config_file} names architecture {architecture!r}; known: "
            f"{sorted(ARCHITECTURES)}"
        )
    model_class, config_class = ARCHITECTURES[architecture]
    model = model_class(config_class(**meta["model"]))
    state = load_file(str(weights_file))
    state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.to(device).eval()


def tokenizer_path(name_or_path: str | Path = "course-gpt") -> Path:
    """Where a saved model's ``tokenizer.json`` is."""
    return _resolve(name_or_path) / "tokenizer.json"


def _checked_tokenizer_file(name_or_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The model's ``tokenizer.json``, once its SHA-256 matches ``config.json``'s, and
    that ``config.json``."""
    directory = _resolve(name_or_path)
    meta = json.loads((directory / "config.json").read_text())
    record = meta.get("tokenizer")
    path = directory / "tokenizer.json"
    if record is None or not path.exists():
        raise FileNotFoundError(
            f"{directory} has no tokenizer.json recorded in its config.json: save the "
            "model with save_pretrained(model, dir, tokenizer=...)"
        )
    digest = _sha256(path)
    if digest != record["sha256"]:
        raise ValueError(
            f"{path} is not the tokenizer this model was trained with (SHA-256 "
            f"{digest[:12]}..., config.json records {record['sha256'][:12]}...)"
        )
    return path, meta


def saved_tokenizer(name_or_path: str | Path = "course-gpt") -> Tokenizer:
    """The ``tokenizers.Tokenizer`` saved with a model (what :func:`save_pretrained`
    takes), checked as :func:`load_tokenizer` checks it."""
    return Tokenizer.from_file(str(_checked_tokenizer_file(name_or_path)[0]))


def load_tokenizer(name_or_path: str | Path = "course-gpt") -> PreTrainedTokenizerFast:
    """The tokenizer saved with a model, as a ``transformers`` fast tokenizer
    (``<|endoftext|>`` is BOS, EOS, UNK and padding; ``<|mask|>``, when the
    vocabulary has it, the mask token).

    Raises ``FileNotFoundError`` when the directory has no tokenizer, and
    ``ValueError`` when ``tokenizer.json`` is not the one the model was saved with
    (its SHA-256 or vocabulary size differs from what ``config.json`` recorded).
    """
    path, meta = _checked_tokenizer_file(name_or_path)
    has_mask = Tokenizer.from_file(str(path)).token_to_id(MASK_TOKEN) is not None
    special = {"mask_token": MASK_TOKEN} if has_mask else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN, pad_token=EOS_TOKEN, **special,
    )  # fmt: skip
    if len(tokenizer) != meta["model"]["vocab_size"]:
        raise ValueError(
            f"{path} has {len(tokenizer)} tokens but the model expects "
            f"{meta['model']['vocab_size']}"
        )
    return tokenizer


def pretrained_metadata(name_or_path: str | Path = "course-gpt") -> dict[str, Any]:
    """The ``config.json`` of a pretrained model: model, training config, results."""
    return json.loads((_resolve(name_or_path) / "config.json").read_text())


def export_hf(name_or_path: str | Path, out_dir: str | Path) -> Path:
    """Export a model saved by :func:`llmbook.model.pretrained.save_pretrained` (a
    directory, or a shipped name such as ``"course-gpt"``) with its tokenizer to
    ``out_dir`` in Hugging Face's format (see :func:`save_hf`). Returns ``out_dir``.

    Afterwards, offline::

        pipeline("text-generation", model=out_dir)
        AutoModelForCausalLM.from_pretrained(out_dir)
        AutoTokenizer.from_pretrained(out_dir)
    """
    model = from_pretrained(name_or_path)
    return save_hf(model, load_tokenizer(name_or_path), out_dir)
