"""Smoke test of benchmarks/train_throughput.py on the tiny preset (a few seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_has_the_columns_and_positive_numbers(bench, capsys):
    rows = bench.main(["--presets", "tiny", "--steps", "3", "--warmup", "1",
                       "--device", "cpu", "--peak-sizes", "256", "512"])  # fmt: skip
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 3, out  # header, separator, one preset
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == bench.COLUMNS
    values = [c.strip() for c in table[2].strip("|").split("|")]
    cells = dict(zip(header, values, strict=True))
    assert cells["preset"] == "tiny" and cells["dtype"] == "fp32"
    for key in ("parameters", "tokens/s", "model GFLOP/s", "peak GFLOP/s", "MFU"):
        assert float(cells[key].rstrip("%").replace(",", "")) > 0, (key, cells)
    (row,) = rows
    assert row["model GFLOP/s"] == pytest.approx(
        row["tokens/s"] * bench.model_flops_per_token(
            bench.PRESETS["tiny"].model_config()) / 1e9
    )  # fmt: skip
    assert 0 < row["MFU"] < 1.5  # a measured peak can be beaten only by noise


def test_unknown_preset_is_a_clear_error(bench):
    with pytest.raises(ValueError, match="unknown presets"):
        bench.benchmark(["huge"], "cpu", peak_sizes=(64,))
