"""An opt-in corpus from the Hugging Face Hub, for readers online (Colab).

:func:`load_hub_corpus` needs the ``datasets`` package and internet access, and is
never used by the course's tests or by any notebook by default; the course's own text
is :func:`llmbook.data.load_corpus`'s offline snapshot.
"""

from __future__ import annotations

import os

__all__ = ["load_hub_corpus"]


def _offline_env() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return var
    return None


def load_hub_corpus(
    dataset: str,
    split: str = "train",
    text_field: str = "text",
    max_docs: int | None = None,
) -> list[str]:
    """Load a text dataset from the Hugging Face Hub (opt-in; needs internet).

    This is the path for readers on Colab (or anywhere online) who want a bigger or
    different corpus than :func:`load_corpus` provides. It needs the ``datasets``
    package and network access, and refuses to run in offline mode. Note that
    ``llmbook.utils.setup()`` turns offline mode on unless ``HF_HUB_OFFLINE`` was
    already set, so set ``os.environ["HF_HUB_OFFLINE"] = "0"`` before calling that.

    Args:
        dataset: a Hub dataset id, e.g. ``"roneneldan/TinyStories"``.
        split: which split to load.
        text_field: the column that holds the text.
        max_docs: stream rows until ``max_docs`` documents are collected (None
            downloads and returns the whole split).

    Returns:
        A list of ``str`` documents, in dataset order; empty strings are dropped.

    Raises:
        RuntimeError: ``datasets`` is not installed, offline mode is on, or the Hub
            cannot be reached or does not have the dataset.
        ValueError: ``text_field`` is not a column of the dataset, or bad ``max_docs``.
    """
    if max_docs is not None and max_docs < 0:
        raise ValueError(f"max_docs must be None or >= 0, got {max_docs}")
    fallback = "use llmbook.data.load_corpus() for the built-in offline corpora"
    try:
        import datasets
    except ImportError as err:
        raise RuntimeError(
            "load_hub_corpus needs the 'datasets' package and internet access: "
            f"run `pip install datasets`, or {fallback}"
        ) from err
    offline = _offline_env()
    if offline is not None:
        raise RuntimeError(
            f"load_hub_corpus needs internet access, but offline mode is on "
            f"({offline}={os.environ[offline]}): set os.environ[{offline!r}] = '0' "
            "at the top of the notebook, before llmbook.utils.setup() (restart the "
            f"runtime if transformers is already imported), or {fallback}"
        )
    streaming = max_docs is not None
    try:
        data = datasets.load_dataset(dataset, split=split, streaming=streaming)
    except Exception as err:
        raise RuntimeError(
            f"could not load dataset {dataset!r} (split {split!r}) from the Hugging "
            f"Face Hub ({type(err).__name__}: {err}); this path needs internet "
            f"access, or {fallback}"
        ) from err
    columns = getattr(data, "column_names", None)
    if columns is not None and text_field not in columns:
        raise ValueError(
            f"dataset {dataset!r} has no column {text_field!r}: choose one of "
            f"{', '.join(map(str, columns))}"
        )
    docs: list[str] = []
    if max_docs == 0:
        return docs
    for row in data:
        text = row[text_field]
        if isinstance(text, str) and text:
            docs.append(text)
            if max_docs is not None and len(docs) >= max_docs:
                break
    return docs
