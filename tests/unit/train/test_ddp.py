"""Data-parallel training (llmbook.train.ddp): 2 CPU ranks (gloo) equal one process.

Each run is a real subprocess (``torchrun`` or plain ``python -m llmbook.train.ddp``) on a
free port, a few seconds each. Tolerances: per-step losses within rel 1e-5 (observed
about 1e-7: the two half-batch gradients are summed in another order than the full
batch's), final weights within 1e-4 absolute (observed about 3e-6).
"""

from __future__ import annotations

import pytest
import torch

from llmbook.train.ddp import rank_slice, run_single, run_torchrun

ARGS = ["--steps", "12", "--global-batch", "16", "--preset", "tiny"]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    weights = tmp_path_factory.mktemp("single") / "weights.pt"
    result = run_single([*ARGS, "--save-weights", str(weights)])
    return result, _load(weights)


def test_rank_slices_cover_the_global_batch_once():
    batch = torch.arange(12 * 5).reshape(12, 5)
    parts = [rank_slice(batch, r, 3) for r in range(3)]
    assert all(p.shape == (4, 5) for p in parts)
    torch.testing.assert_close(torch.cat(parts), batch, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        rank_slice(batch[:11], 0, 3)


def _assert_matches(result, weights, reference):
    ref_result, ref_weights = reference
    assert result["world_size"] == 2 and result["per_rank_batch"] == 8
    assert ref_result["world_size"] == 1
    assert len(result["loss"]) == len(ref_result["loss"]) == 12
    torch.testing.assert_close(
        torch.tensor(result["loss"]), torch.tensor(ref_result["loss"]),
        rtol=1e-5, atol=0,
    )  # fmt: skip
    assert ref_result["loss"][-1] < ref_result["loss"][0] - 0.1, "it did not train"
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], ref_weights[name],
                                   rtol=0, atol=1e-4, msg=name)  # fmt: skip


@pytest.mark.parametrize("mode", ["ddp", "accelerate"])
def test_two_ranks_equal_one_process(mode, reference, tmp_path):
    weights = tmp_path / "weights.pt"
    extra = ["--accelerate"] if mode == "accelerate" else []
    result = run_torchrun(2, [*ARGS, *extra, "--save-weights", str(weights)])
    assert result["mode"] == mode and result["backend"] == "gloo"
    _assert_matches(result, _load(weights), reference)


def test_indivisible_global_batch_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not divisible by the world size 2"):
        run_torchrun(2, ["--steps", "1", "--global-batch", "15"])
