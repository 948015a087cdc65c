"""Checkpoints: everything needed to resume a run exactly (Chapter 5)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmbook.train.config import TrainConfig
from llmbook.train.history import History

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    history: History,
    ema: nn.Module | None = None,
) -> Path:
    """Everything needed to resume: weights, optimiser moments, step, RNG, history
    (and the weight average, when the run keeps one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": config.to_dict(),
        "history": history.to_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: nn.Module | None = None,
) -> tuple[int, History]:
    """Restore a :func:`save_checkpoint` file; returns ``(step, history)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if "ema" not in state:
            raise ValueError(f"{path} holds no weight average (ema_decay was 0)")
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], History(**state["history"])
