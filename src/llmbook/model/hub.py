"""One ``MODEL`` setting for the harness chapters: the course GPT or a hub model.

:func:`load_causal_lm` returns ``(model, tokenizer)`` for either

* a course model shipped with the package (``"course-gpt"``, ``"course-gpt-sft"``,
  ``"course-gpt-rag"``, ``"course-gpt-draft"``) or a directory written by
  :func:`~llmbook.model.pretrained.save_pretrained`: the course ``GPT`` and its
  tokenizer, exactly as ``from_pretrained`` and ``load_tokenizer`` give them; or
* anything else: a Hugging Face causal LM, by model id (``"gpt2"``,
  ``"HuggingFaceTB/SmolLM2-135M-Instruct"``; this downloads, so it needs the
  network) or by a local directory in Hugging Face's format (such as one written by
  :func:`~llmbook.model.pretrained.export_hf`; offline).

A hub model comes wrapped in :class:`HubCausalLM`, which looks like the course
``GPT`` to the package's harness code: ``model(idx)`` gives logits (batch, seq,
vocab), ``model.config`` has ``context_length`` and ``vocab_size``, and the model is
in eval mode on ``device``. It does not take the course's KV cache
(``supports_kv_cache`` is False): :func:`llmbook.decoding.stream` and ``generate``
then rerun the whole sequence at every step, which gives the same tokens, only
slower. The model is loaded with ``attn_implementation="eager"`` so that it can
return attention weights. ``transformers`` is imported only when a hub model is
loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from llmbook.model.pretrained import WEIGHTS_DIR, from_pretrained, load_tokenizer

__all__ = ["HubConfig", "HubCausalLM", "course_models", "load_causal_lm"]

#: The longest context a hub model is given (many declare far more than a CPU
#: or a free Colab GPU can run through the harness in reasonable time).
MAX_CONTEXT = 1024


@dataclass(frozen=True)
class HubConfig:
    """What the harness code reads from ``model.config``."""

    name: str
    context_length: int
    vocab_size: int


class HubCausalLM(nn.Module):
    """A ``transformers`` causal LM with the course GPT's calling convention:
    ``forward(idx) -> logits`` (batch, seq, vocab)."""

    #: :func:`llmbook.decoding.stream` reads this: no course ``KVCache`` here.
    supports_kv_cache = False

    def __init__(self, hf_model: nn.Module, name: str, max_context: int = MAX_CONTEXT):
        super().__init__()
        self.hf_model = hf_model
        cfg = hf_model.config
        declared = getattr(cfg, "n_positions", None) or getattr(
            cfg, "max_position_embeddings", None
        )
        context = min(declared, max_context) if declared else max_context
        self.config = HubConfig(name, int(context), int(cfg.vocab_size))

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, seq), got {tuple(idx.shape)}")
        if idx.shape[1] > self.config.context_length:
            raise ValueError(
                f"{idx.shape[1]} tokens exceed {self.config.name}'s context_length "
                f"{self.config.context_length}"
            )
        if attention_mask is None:  # every token is real (and transformers warns
            attention_mask = torch.ones_like(idx)  # when the pad id shows up unmasked)
        out = self.hf_model(input_ids=idx, attention_mask=attention_mask,
                            use_cache=False)  # fmt: skip
        return out.logits


def course_models() -> list[str]:
    """The causal LMs shipped with the package (names for :func:`load_causal_lm`)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    names = []
    for path in sorted(WEIGHTS_DIR.iterdir()):
        config = path / "config.json"
        if config.is_file() and (path / "model.safetensors").is_file():
            if json.loads(config.read_text()).get("architecture", "GPT") == "GPT":
                names.append(path.name)
    return names


def _is_course_dir(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and "model" in json.loads(config.read_text())


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def load_causal_lm(
    name: str | Path = "course-gpt", device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` for a course model or a Hugging Face causal LM (see
    the module docstring). The tokenizer has ``encode``, ``decode``,
    ``eos_token`` and ``eos_token_id`` in both cases (a ``transformers`` fast
    tokenizer). Raises ``ValueError`` naming the problem when ``name`` is none of
    these."""
    text = str(name)
    path = Path(text).expanduser()
    if text in course_models() or (path.is_dir() and _is_course_dir(path)):
        model = from_pretrained(text if text in course_models() else path, device)
        return model, load_tokenizer(text if text in course_models() else path)
    if not path.is_dir() and (isinstance(name, Path) or _looks_like_path(text)):
        raise ValueError(
            f"{text!r}: no such directory (give a course model {course_models()}, a "
            "directory in Hugging Face's format, or a Hugging Face model id)"
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{text!r} is a directory without a config.json")

    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(text)
        hf_model = AutoModelForCausalLM.from_pretrained(
            text, attn_implementation="eager"
        )
    except (OSError, ValueError) as err:
        offline = (
            " (offline: HF_HUB_OFFLINE is set, so only models already in the cache "
            "load)"
            if constants.HF_HUB_OFFLINE
            else ""
        )
        raise ValueError(
            f"cannot load {text!r}: it is not a course model {course_models()}, "
            f"not a local directory, and not a Hugging Face causal LM that could be "
            f"loaded{offline}: {type(err).__name__}: {err}"
        ) from err
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{text!r}'s tokenizer has no end-of-text token")
    return HubCausalLM(hf_model, text).to(device).eval(), tokenizer
