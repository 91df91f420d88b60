"""The `compute` section and the one device- and dtype-aware model-loading path."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from lib.core.models import ComputeConfig, cpu_threads, load_model, resolve_device
from tests.tiny_models import save_tiny_bert_checkpoint, save_tiny_causal_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("values, match", [
    ({"device": "gpu"}, r"device='gpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
    ({"device": "cuda:x"}, r"device='cuda:x'"),
    ({"dtype": "float64"}, r"dtype='float64'; allowed: float32, bfloat16, float16"),
    ({"threads": 0}, r"threads=0; allowed: null or an integer >= 1"),
    ({"threads": True}, r"threads=True"),
])
def test_config_rejects_bad_values(values: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ComputeConfig(**values)


def test_devices_resolve_to_what_this_machine_has() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device, on any machine
    with pytest.raises(ValueError, match=re.escape(f"compute.device={missing!r} but this machine has")):
        resolve_device(missing)


def test_threads_default_to_the_cpus_this_process_may_use() -> None:
    assert cpu_threads(ComputeConfig(threads=3)) == 3
    assert 1 <= cpu_threads(ComputeConfig()) <= (os.cpu_count() or 1)


@pytest.mark.parametrize("family, save", [("masked", save_tiny_bert_checkpoint), ("causal", save_tiny_causal_checkpoint)])
def test_load_model_honours_dtype_and_device(tmp_path: Path, family: str, save) -> None:
    folder = str(save(tmp_path / family))
    full, _ = load_model(folder, family)
    half, _ = load_model(folder, family, compute=ComputeConfig(device="cpu", dtype="bfloat16"))
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in half.parameters()} == {"cpu"} and not half.training
    for (name, a), (_, b) in zip(full.named_parameters(), half.named_parameters()):
        # the same weights (and the same seeded new heads), rounded to bfloat16
        assert torch.equal(a.to(torch.bfloat16), b), name


def test_no_model_is_loaded_outside_the_one_path() -> None:
    """Every from_pretrained of a model lives in lib/core/models.py (where device and dtype are applied)."""
    offenders = [f"{path.relative_to(ROOT)}:{i}" for folder in ("lib", "tasks", "flows", "tools")
                 for path in sorted((ROOT / folder).rglob("*.py")) if path != ROOT / "lib/core/models.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if "from_pretrained(" in line]
    assert not offenders, offenders
