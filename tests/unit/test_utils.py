"""llmbook.utils: seeding, device choice, versions and the notebook setup call.

CUDA and MPS are simulated with monkeypatch, so every branch runs on a CPU-only machine.
"""

import os
import random
import re
import sys
import types

import numpy as np
import pytest
import torch

import llmbook
from llmbook.utils import (
    autocast_dtype,
    get_device,
    in_colab,
    seed_everything,
    setup,
    versions,
)


def draws() -> tuple:
    return (
        random.random(),
        float(np.random.rand()),
        torch.rand(3).tolist(),
    )


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def restore_hf(monkeypatch):
    """Undo setup()'s global changes to environment variables and library state."""
    for var in (
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TOKENIZERS_PARALLELISM",
        "TRANSFORMERS_VERBOSITY",
        "PYTHONHASHSEED",
    ):
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub.constants as hf_constants
    import transformers

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", hf_constants.HF_HUB_OFFLINE)
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    yield
    transformers.logging.set_verbosity(verbosity)
    if bars:
        transformers.logging.enable_progress_bar()


# --- in_colab -------------------------------------------------------------------------


def test_in_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert in_colab() is False  # this test suite never runs on Colab
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert in_colab() is True


# --- seed_everything ------------------------------------------------------------------


def test_seed_everything_repeats_all_generators(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    seed_everything(123)
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    assert draws() != first
    assert os.environ["PYTHONHASHSEED"] == "124"


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_everything_rejects_out_of_range(seed):
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32\)"):
        seed_everything(seed)


def test_seed_everything_rejects_non_int():
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        seed_everything(1.5)


# --- get_device -----------------------------------------------------------------------


def test_get_device_defaults_to_cpu_without_accelerators(no_gpu):
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_prefers_cuda_then_mps(monkeypatch, no_gpu):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device() == torch.device("mps")
    assert get_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert get_device() == torch.device("cuda")
    assert get_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"'cuda:1' requested but only 1 CUDA"):
        get_device("cuda:1")


@pytest.mark.parametrize("name", ["banana", "tpu", "xla", ""])
def test_get_device_unknown_name(name):
    with pytest.raises(ValueError, match=r"unknown device .*: choose one of cuda, mps"):
        get_device(name)


def test_get_device_unavailable(no_gpu):
    with pytest.raises(ValueError, match="'cuda' requested but CUDA is not available"):
        get_device("cuda")
    with pytest.raises(ValueError, match="'mps' requested but Apple MPS is not"):
        get_device("mps")


# --- autocast_dtype -------------------------------------------------------------------


def test_autocast_dtype(monkeypatch):
    assert autocast_dtype("cpu") is None
    assert autocast_dtype(torch.device("mps")) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(torch.device("cuda:0")) is torch.float16


# --- versions and setup ---------------------------------------------------------------


def test_versions():
    info = versions()
    assert {"python", "torch", "transformers", "numpy", "llmbook"} <= set(info)
    assert info["torch"] == torch.__version__
    assert info["numpy"] == np.__version__
    assert info["llmbook"] == llmbook.__version__
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert ("cuda" in info) == torch.cuda.is_available()
    assert all(isinstance(v, str) and v for v in info.values())


def test_setup_prints_one_line_and_quiets_libraries(capsys, restore_hf, no_gpu):
    import huggingface_hub.constants as hf_constants
    import transformers

    device = setup(seed=7)
    out = capsys.readouterr().out
    assert device == torch.device("cpu")
    lines = out.splitlines()
    assert len(lines) == 1, out
    pattern = (
        r"llmbook \S+ \| torch [^+\s]+ \| transformers \S+ \| device cpu \| seed 7"
    )
    assert re.fullmatch(pattern, lines[0]), lines[0]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert hf_constants.HF_HUB_OFFLINE is True
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert transformers.logging.get_verbosity() == transformers.logging.ERROR
    assert not transformers.logging.is_progress_bar_enabled()
    # seeded: the next draws are those of seed 7
    after_setup = draws()
    seed_everything(7)
    assert draws() == after_setup


def test_setup_respects_user_offline_choice_and_quiet(capsys, restore_hf, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    device = setup(seed=0, quiet=True)
    assert isinstance(device, torch.device)
    assert capsys.readouterr().out == ""
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_setup_leaves_the_network_alone_on_colab(restore_hf, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("llmbook.utils.in_colab", lambda: True)
    setup(seed=0, quiet=True)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_lazy_names_import_the_module_on_first_use():
    """In a fresh interpreter (this one has loaded everything already)."""
    import subprocess

    code = """if True:
        import sys
        import llmbook.apps
        assert "llmbook.apps.rag" not in sys.modules, "imported with the package"
        from llmbook.apps import ReaderConfig
        assert ReaderConfig is sys.modules["llmbook.apps.rag"].ReaderConfig
        try:
            llmbook.apps.no_such_name
        except AttributeError as error:
            print(error)
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "module 'llmbook.apps' has no attribute 'no_such_name'\n"
