"""Smoke test of benchmarks/train_throughput.py on the tiny preset (a few seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


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
            bench.PRESETS["tiny"].model) / 1e9
    )  # fmt: skip
    assert 0 < row["MFU"] < 1.5  # a measured peak can be beaten only by noise


def test_unknown_preset_is_a_clear_error(bench):
    with pytest.raises(ValueError, match="unknown presets"):
        bench.benchmark(["huge"], "cpu", peak_sizes=(64,))


FAKE_NANOGPT = """
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmbook.model import GPT as Ours, GPTConfig as OursConfig


@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 128
    n_layer: int = 1
    n_head: int = 1
    n_embd: int = 16
    dropout: float = 0.0
    bias: bool = True


class GPT(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.inner = Ours(OursConfig(vocab_size=c.vocab_size, context_length=c.block_size,
                                     d_model=c.n_embd, n_heads=c.n_head, n_layers=c.n_layer,
                                     dropout=c.dropout))

    def forward(self, idx, targets):
        logits = self.inner(idx)
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas)
"""


def test_nanogpt_comparison_times_both_at_each_config(bench, tmp_path):
    """The harness with a stand-in for nanoGPT's model.py (the real one stays outside
    the repository): one row per configuration, positive rates, ratio = their quotient."""
    path = tmp_path / "model.py"
    path.write_text(FAKE_NANOGPT)
    rows = bench.compare_nanogpt(str(path), rounds=2, steps=1, peak_sizes=(128,))
    assert [r["config"] for r in rows] == list(bench.NANOGPT_CONFIGS)
    for r in rows:
        assert r["ours tokens/s"] > 0 and r["nanoGPT tokens/s"] > 0
        assert r["ratio"] == pytest.approx(r["ours tokens/s"] / r["nanoGPT tokens/s"])
        assert len(r["ours rounds"]) == len(r["round ratios"]) == 2
        flops = bench.model_flops_per_token(bench._our_config(
            bench.NANOGPT_CONFIGS[r["config"]]))  # fmt: skip
        assert r["ours MFU"] == pytest.approx(
            flops * r["ours tokens/s"] / (r["fp32 peak GFLOP/s"] * 1e9)
        )
        # our side runs as python -m llmbook.pretrain: bf16 only on a bf16 CPU
        assert r["ours dtype"] == ("bf16 autocast" if bench.cpu_has_bf16() else "fp32")
    table = bench.markdown_nanogpt(rows).splitlines()
    assert len(table) == 2 + 2 * (2 + 1)  # header, rule, per config 2 rounds + median
    with pytest.raises(FileNotFoundError):
        bench.compare_nanogpt(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="rounds"):
        bench.compare_nanogpt(str(path), rounds=0)


GENERATE = Path(__file__).resolve().parents[2] / "benchmarks" / "generate_throughput.py"


def test_generate_benchmark_prints_a_table_of_equal_outputs(capsys):
    spec = importlib.util.spec_from_file_location("generate_throughput", GENERATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--batch", "1", "2", "--new-tokens", "6", "--repeats", "1",
                        "--device", "cpu"])  # fmt: skip
    table = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("|")
    ]
    assert len(table) == 2 + 6  # header, separator, 3 methods x 2 batch sizes
    assert [c.strip() for c in table[0].strip("|").split("|")] == module.COLUMNS
    assert all(row["same tokens"] for row in rows)  # ours and HF decode the same
    assert all(row["new tokens/s"] > 0 for row in rows)
    hf = [row for row in rows if row["method"] == "HF generate"]
    assert all(row["vs HF generate"] == pytest.approx(1.0) for row in hf)
    with pytest.raises(ValueError, match="context_length"):
        module.benchmark(new_tokens=500)
