"""``python -m llmbook.gpu_check`` in its CPU smoke mode: every GPU path's code runs on
tiny sizes (the ``tiny`` preset, a few steps, two CPU ranks over gloo) and the
reports say what they measured. The GPU numbers themselves need a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from llmbook import gpu_check
from llmbook.model import GPT
from llmbook.train import PRESETS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    report = gpu_check.main(["--out", str(out), "--smoke"])
    return out, report


def test_smoke_report_is_written_and_says_it_is_a_smoke_run(smoke):
    out, report = smoke
    assert json.loads((out / "report.json").read_text())["mode"] == report["mode"]
    assert report["mode"].startswith("smoke")
    md = (out / "report.md").read_text()
    for heading in ("## Training", "## Batched evaluation", "## Generation",
                    "## Memory", "## Data parallelism"):  # fmt: skip
        assert heading in md, heading


def test_smoke_training_ran_the_preset_and_learned(smoke):
    t = smoke[1]["training"]
    assert t["preset"] == "tiny" and t["steps"] == 6
    assert t["tokens_per_second_steady"] > 0 and 0 < t["mfu_vs_measured"] < 1.5
    assert t["loss_last"] < t["loss_first"]  # six steps at a warm-up lr still help
    assert t["mfu_vs_datasheet"] == "unknown"  # no datasheet peak for a CPU


def test_smoke_evaluation_matches_fp32(smoke):
    e = smoke[1]["evaluation"]
    assert e["tokens"] > 0 and e["tokens_per_second"] > 0
    assert e["relative_difference"] < 1e-6  # the same fp32 computation on the CPU


def test_smoke_generation_gives_hf_tokens(smoke):
    rows = smoke[1]["generation"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["same_tokens"] and r["ours_tokens_per_second"] > 0 for r in rows)


def test_smoke_memory_int8_and_bf16_are_smaller_and_close(smoke):
    fp32, bf16, int8 = smoke[1]["memory"]
    model = GPT(PRESETS["tiny"].model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    n_params = sum(p.numel() for p in model.parameters())  # the tied head counted once
    assert fp32["tensor_bytes"] == 4 * n_params
    assert bf16["tensor_bytes"] == 2 * n_params
    # w8: every nn.Linear's weight becomes int8 with an fp32 scale per output row;
    # the tied LM head becomes an int8 copy while the embedding stays fp32
    head = model.lm_head.weight.numel()
    w8 = sum(m.weight.numel() + 4 * m.out_features for m in linears)
    assert int8["tensor_bytes"] == 4 * (n_params - head) - 4 * (
        sum(m.weight.numel() for m in linears) - head) + w8 + 4 * head  # fmt: skip
    assert fp32["max_abs_logit_change"] == 0
    assert 0 < bf16["max_abs_logit_change"] < 0.5
    assert 0 < int8["max_abs_logit_change"] < 0.5


def test_smoke_skips_ddp_without_a_gpu_and_with_one(smoke, monkeypatch):
    assert smoke[1]["ddp"]["status"] == "skipped"
    assert "no GPU" in smoke[1]["ddp"]["reason"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    one = gpu_check.check_ddp(torch.device("cuda"), {})
    assert one == {"status": "skipped", "reason": "1 GPU: DDP over NCCL needs 2+"}


def test_datasheet_peaks_by_name():
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.bf16_peak_tflops("NVIDIA L40S") == 362.0
    assert gpu_check.bf16_peak_tflops("NVIDIA L4") == 121.0
    assert gpu_check.bf16_peak_tflops("Tesla T4") is None  # no bf16 tensor cores


def test_bad_steps_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), "--steps", "0"])
