"""Environment helpers: seeding, device choice, versions, and the notebook setup call.

Every notebook starts with the same setup cell::

    from llmbook.utils import setup

    device = setup(seed=0)

:func:`setup` silences output that is not part of the lesson (Hugging Face progress
bars and info logs, the tokenizers fork warning), turns Hugging Face Hub offline mode
on unless the reader chose otherwise, seeds every random number generator, picks the
best available device, and prints one line saying what it found.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import random
import sys
import warnings

import numpy as np
import torch

from llmbook import __version__

__all__ = [
    "lazy_names",
    "in_colab",
    "seed_everything",
    "get_device",
    "autocast_dtype",
    "versions",
    "setup",
]

_DEVICE_TYPES = ("cuda", "mps", "cpu")


def in_colab() -> bool:
    """True when running inside a Google Colab runtime."""
    if "google.colab" in sys.modules:
        return True
    try:
        import importlib.util

        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no 'google' package, or a broken one
        return False


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy's global RNG and PyTorch (CPU and all GPUs).

    Also sets ``PYTHONHASHSEED`` for any subprocess started later (it cannot change
    string hashing in the running interpreter). This makes a notebook repeatable on
    one machine; it does not force bit-identical GPU kernels across machines.

    Args:
        seed: a non-negative integer below 2**32 (NumPy's limit).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: CUDA if available, else Apple MPS, else the CPU.

    Args:
        prefer: force a device, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Raises:
        ValueError: ``prefer`` is not a device name, or names a device this machine
            does not have.
    """
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(prefer)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {prefer!r}: choose one of {', '.join(_DEVICE_TYPES)}"
        ) from err
    if device.type not in _DEVICE_TYPES:
        raise ValueError(
            f"unknown device {prefer!r}: choose one of {', '.join(_DEVICE_TYPES)}"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {prefer!r} requested but CUDA is not available "
                "(no NVIDIA GPU, or a CPU-only PyTorch build); use 'cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {prefer!r} requested but only {count} CUDA device(s) exist"
            )
    if device.type == "mps" and not _mps_available():
        raise ValueError(
            f"device {prefer!r} requested but Apple MPS is not available on this "
            "machine; use 'cpu'"
        )
    return device


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The dtype to pass to ``torch.autocast`` on ``device``, or None for full fp32.

    bfloat16 on CUDA GPUs that support it (Ampere and newer), float16 on older CUDA
    GPUs, and None on CPU and MPS, where the course trains in float32.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Versions of Python and the main libraries, for bug reports and the setup line.

    Returns:
        ``{"python", "torch", "transformers", "numpy", "llmbook"}`` mapped to version
        strings (``"not installed"`` when missing), plus ``"cuda"``, the name of GPU 0,
        when CUDA is available.
    """
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _package_version("transformers"),
        "numpy": np.__version__,
        "llmbook": __version__,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name(0)
    return info


def _quiet_hugging_face() -> None:
    """Silence progress bars and info logs; turn Hub offline mode on outside Colab.

    The course's default path never downloads, so offline mode there turns a stray
    network call into a clear error instead of a hang. On Colab, where the opt-in hub
    parameters are meant to work, the network is left alone.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "HF_HUB_OFFLINE" not in os.environ and not in_colab():
        os.environ["HF_HUB_OFFLINE"] = "1"
        # huggingface_hub reads the variable once, at import; if it is already
        # imported, update the module constant it consults on every request.
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
    try:
        import transformers
    except ImportError:
        return
    transformers.logging.set_verbosity_error()
    # Also turns off huggingface_hub's bars, including the "Loading weights" bar.
    transformers.logging.disable_progress_bar()


def setup(seed: int = 0, quiet: bool = False) -> torch.device:
    """Prepare a notebook: quiet libraries, seed everything, pick and report a device.

    Sets ``HF_HUB_DISABLE_PROGRESS_BARS=1``, ``TOKENIZERS_PARALLELISM=false`` (unless
    set), ``HF_HUB_OFFLINE=1`` (unless set, and not on Colab; the course's default path never
    downloads),
    the transformers log level to errors, and ignores ``UserWarning`` and
    ``FutureWarning`` (library notices that are not the lesson); then calls :func:`seed_everything` and
    :func:`get_device`. Unless ``quiet``, prints one line such as
    ``llmbook 0.1.0 | torch 2.13.0 | transformers 5.23.0 | device cpu | seed 0``.

    Returns:
        The chosen ``torch.device``.
    """
    _quiet_hugging_face()
    # Library warnings (deprecations, "this API will change") are not the lesson.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    seed_everything(seed)
    device = get_device()
    if not quiet:
        info = versions()
        where = device.type
        if "cuda" in info and device.type == "cuda":
            where = f"cuda ({info['cuda']})"
        torch_version = info["torch"].split("+", 1)[0]
        print(
            f"llmbook {info['llmbook']} | torch {torch_version} | "
            f"transformers {info['transformers']} | device {where} | seed {seed}"
        )
    return device


def lazy_names(package: str, module: str, names: tuple[str, ...]):
    """A ``__getattr__`` for ``package``'s ``__init__``: the attributes ``names`` come
    from ``package.module``, imported on first use.

    For a sub-module that is also a command (``python -m package.module``): imported
    by the package's ``__init__``, it would be loaded before runpy runs it as
    ``__main__``, so twice in all, and Python warns.
    """

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
