"""Smoke test of benchmarks/serve_latency.py with a tiny load (a few seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("serve_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_has_a_row_per_variant_and_concurrency(bench, capsys):
    rows = bench.main(["--variants", "fp32", "int8", "int8-ours", "--requests", "6",
                       "--concurrency", "1", "3", "--new-tokens", "3"])  # fmt: skip
    table = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("|")
    ]
    assert len(table) == 2 + 3 * 2
    assert [c.strip() for c in table[0].strip("|").split("|")] == bench.COLUMNS
    assert [(r["model"], r["concurrency"]) for r in rows] == [
        (m, c) for m in ("fp32", "int8", "int8-ours") for c in (1, 3)
    ]
    for r in rows:
        assert r["requests"] == 6 and r["failed"] == 0
        assert 0 < r["p50_s"] <= r["p95_s"] and r["tokens_per_s"] > 0


def test_bad_arguments_are_clear_errors(bench):
    with pytest.raises(ValueError, match="unknown variants"):
        bench.benchmark(["fp16"])
    with pytest.raises(ValueError, match="requests"):
        bench.benchmark(requests=0)
