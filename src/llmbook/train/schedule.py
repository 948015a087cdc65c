"""The learning-rate schedule used to pretrain GPT-style models (Chapter 5):
``cosine_schedule`` (linear warm-up, then cosine decay) and ``cosine_lambda`` (the same
as a multiplier for ``torch.optim.lr_scheduler.LambdaLR``).

``tests/unit/train/test_optim.py`` checks the schedule against
``transformers.get_cosine_schedule_with_warmup``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["check_number", "cosine_schedule", "cosine_lambda"]


def check_number(name: str, value: float, *, low: float, open_low: bool) -> None:
    """Refuse a `value` that is not a number, or below `low` (or equal to it, with
    `open_low`), naming it."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < low or (open_low and value == low) or math.isnan(value):
        bound = f"> {low}" if open_low else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_schedule(
    step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float
) -> None:
    for name, value in (
        ("step", step),
        ("warmup_steps", warmup_steps),
        ("total_steps", total_steps),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must be <= total_steps ({total_steps})"
        )
    check_number("max_lr", max_lr, low=0.0, open_low=False)
    check_number("min_lr", min_lr, low=0.0, open_low=False)
    if min_lr > max_lr:
        raise ValueError(f"min_lr ({min_lr}) must be <= max_lr ({max_lr})")


def cosine_schedule(
    step: int,
    *,
    max_lr: float,
    warmup_steps: int,
    total_steps: int,
    min_lr: float = 0.0,
) -> float:
    r"""The learning rate at optimiser step ``step`` (0-based): warm-up, then cosine.

    With :math:`W` = ``warmup_steps`` and :math:`T` = ``total_steps``:

    .. math::

        \eta(s) = \begin{cases}
            \eta_{\max}\, s / W & s < W \quad\text{(linear warm-up from 0)} \\
            \eta_{\min} + (\eta_{\max} - \eta_{\min})\,
                \tfrac12\bigl(1 + \cos(\pi p)\bigr),
            \ p = \min\!\bigl(1, \tfrac{s - W}{\max(1, T - W)}\bigr) & s \ge W
        \end{cases}

    So ``step=0`` gives 0 when ``warmup_steps > 0`` (the first update is a no-op),
    ``step=warmup_steps`` gives ``max_lr``, ``step=total_steps`` gives ``min_lr``, and
    every later step stays at ``min_lr``. The warm-up starts from 0, not from
    ``min_lr``. With ``min_lr=0`` this equals ``lr * lambda(step)`` of
    ``transformers.get_cosine_schedule_with_warmup`` for every ``step <= total_steps``
    (after ``total_steps`` transformers' cosine rises again; this one stays flat).
    When ``warmup_steps == total_steps`` the rate reaches ``max_lr`` at
    ``total_steps`` and is ``min_lr`` from the next step on, as in transformers.

    Units: the same as ``max_lr`` and ``min_lr``.
    """
    _check_schedule(step, max_lr, warmup_steps, total_steps, min_lr)
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_lambda(
    *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """``cosine_schedule`` as a multiplier for ``torch.optim.lr_scheduler.LambdaLR``.

    ``LambdaLR`` sets each group's rate to ``base_lr * f(step)``; the returned ``f``
    is ``cosine_schedule`` with ``max_lr=1`` and ``min_lr=min_lr_ratio`` (so the final
    rate is ``min_lr_ratio * base_lr``). Arguments are checked here, not at step time.

    Usage::

        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, cosine_lambda(warmup_steps=100, total_steps=1000)
        )
    """
    _check_schedule(0, 1.0, warmup_steps, total_steps, min_lr_ratio)

    def multiplier(step: int) -> float:
        return cosine_schedule(
            step,
            max_lr=1.0,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            min_lr=min_lr_ratio,
        )

    return multiplier
