"""Compute, energy and CO2 of a training run, with every assumption explicit
(Chapter 13).

Two routes to energy:

* from *measured time*: ``kWh = seconds * watts / 3.6e6`` (what the run took on the
  machine it ran on, with an assumed power draw);
* from *FLOPs*: ``seconds = FLOPs / (peak FLOP/s * utilisation)``, then as above (what
  the same work would take on other hardware).

Both are multiplied by the data centre's PUE (power usage effectiveness: total
facility power over IT power, >= 1), and CO2-equivalent is ``kWh * grid intensity``
(kg CO2e per kWh). None of these numbers is measured here; they are stated inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbook.model.gpt import GPTConfig, model_flops_per_token

__all__ = ["Hardware", "Footprint", "training_flops", "footprint_from_time",
           "footprint_from_flops"]  # fmt: skip


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}"
        )
    return float(value)


@dataclass(frozen=True)
class Hardware:
    """An accelerator: peak dense FLOP/s, board power in watts, and the share of the
    peak a training run achieves (model FLOPs utilisation, MFU)."""

    name: str
    peak_flops: float
    watts: float
    utilization: float

    def __post_init__(self) -> None:
        _positive("peak_flops", self.peak_flops)
        _positive("watts", self.watts)
        if not 0 < _positive("utilization", self.utilization) <= 1:
            raise ValueError(f"utilization must be in (0, 1], got {self.utilization}")


@dataclass(frozen=True)
class Footprint:
    """Seconds of compute, energy in kWh (facility, PUE included), kg CO2e."""

    seconds: float
    kwh: float
    kg_co2e: float


def training_flops(config: GPTConfig, tokens: int) -> float:
    """Matmul FLOPs of training ``GPT(config)`` on ``tokens`` tokens
    (:func:`~llmbook.model.model_flops_per_token`, forward + backward)."""
    _positive("tokens", tokens)
    return float(model_flops_per_token(config, training=True)) * tokens


def footprint_from_time(
    seconds: float, watts: float, pue: float = 1.0, kg_co2e_per_kwh: float = 0.45
) -> Footprint:
    """Energy and CO2e of ``seconds`` at a draw of ``watts``."""
    seconds, watts = _positive("seconds", seconds, True), _positive("watts", watts)
    if _positive("pue", pue) < 1:
        raise ValueError(f"pue is at least 1 (facility power >= IT power), got {pue}")
    kwh = seconds * watts * pue / 3.6e6
    return Footprint(
        seconds, kwh, kwh * _positive("kg_co2e_per_kwh", kg_co2e_per_kwh, True)
    )


def footprint_from_flops(
    flops: float, hardware: Hardware, pue: float = 1.0, kg_co2e_per_kwh: float = 0.45
) -> Footprint:
    """Energy and CO2e of ``flops`` on ``hardware`` at its utilisation."""
    seconds = _positive("flops", flops, True) / (
        hardware.peak_flops * hardware.utilization
    )
    return footprint_from_time(seconds, hardware.watts, pue, kg_co2e_per_kwh)
