"""The `compute` section and the one device- and dtype-aware model-loading path."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import tasks
from lib.core.adapter import FFNAdapter
from lib.core.attribution import grad_x_act
from lib.core.finetune import TrainConfig, train
from lib.core.ig import IGConfig, integrated_gradients
from lib.core.models import ComputeConfig, cpu_threads, load_model, ray_workers, resolve_device, task_threads
from lib.families.causal import nll_batch_loss, of
from tasks import tracking
from tests.tiny_models import ALL_TINY, save_tiny_bert_checkpoint, save_tiny_causal_checkpoint, tiny_llama

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("values, match", [
    ({"device": "gpu"}, r"device='gpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
    ({"device": "cuda:x"}, r"device='cuda:x'"),
    ({"dtype": "float64"}, r"dtype='float64'; allowed: float32, bfloat16, float16"),
    ({"threads": 0}, r"threads=0 invalid; allowed: an integer >= 1, or null"),
    ({"threads": True}, r"threads=True"),
    ({"runner": "dask"}, r"runner='dask'; allowed: local, ray"),
    ({"workers": 0}, r"workers=0 invalid; allowed: an integer >= 1, or null"),
    ({"ray_address": " "}, r"ray_address=' ' invalid; allowed: a non-empty string, or null"),
    ({"device_map": "balanced"}, r"device_map='balanced'; allowed: null, auto"),
    ({"processes": 0}, r"processes=0 invalid; allowed: an integer >= 1"),
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
    # a Ray task gets 1 thread unless told, and a local Ray as many slots as the CPUs hold
    assert task_threads(ComputeConfig()) == 1 and task_threads(ComputeConfig(threads=2)) == 2
    assert ray_workers(ComputeConfig()) == cpu_threads(ComputeConfig()) and ray_workers(ComputeConfig(workers=5)) == 5


@pytest.mark.parametrize("family, save", [("masked", save_tiny_bert_checkpoint), ("causal", save_tiny_causal_checkpoint)])
def test_device_map_auto_loads_through_accelerate_with_the_same_outputs(tmp_path: Path, family: str, save) -> None:
    """device_map: auto loads through transformers' placement (without a GPU every layer stays on the CPU)."""
    folder = str(save(tmp_path / family))
    plain, _ = load_model(folder, family)
    spread, _ = load_model(folder, family, compute=ComputeConfig(device_map="auto"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {p.device.type for p in spread.parameters()} == {expected} and not spread.training
    assert {p.dtype for p in spread.parameters()} == {torch.float32}
    ids = torch.tensor([[5, 7, 9, 11, 13]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits.cpu(), spread(input_ids=ids).logits.cpu(), atol=1e-4)


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


# --- a model in bfloat16: statistics still accumulate in float32 -----------------------------------------------

def _rows(n: int = 3, length: int = 9) -> SimpleNamespace:
    """Random rows with one scored position and gold token each."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 101, (n, length), generator=gen)
    return SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids), positions=torch.tensor([2, 5, 8][:n]),
                           gold_ids=torch.randint(5, 101, (n,), generator=gen))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_attribution_and_ig_of_a_bfloat16_model_are_float32(family: str) -> None:
    """Grad x Act and IG of a bfloat16 model come out float32 and close to the float32 model's (rank agreement)."""
    full = ALL_TINY[family](seed=1)
    half = ALL_TINY[family](seed=1).to(torch.bfloat16)
    rows = _rows()
    for model_fn in (lambda m: grad_x_act(m, FFNAdapter.for_model(m), rows.input_ids, rows.attention_mask,
                                          rows.positions, rows.gold_ids),
                     lambda m: integrated_gradients(m, FFNAdapter.for_model(m), rows, IGConfig(steps=3))):
        ref, got = model_fn(full), model_fn(half)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        # bfloat16 keeps ~3 significant digits: the scores agree in direction, not in the last bits
        cosine = torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0)
        assert cosine > 0.9, float(cosine)


# --- fine-tuning under autocast keeps float32 master weights -------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_autocasts_but_keeps_float32_weights(dtype: torch.dtype) -> None:
    """train(autocast=...) runs the forward in `dtype`, steps float32 weights, and still learns the rows."""
    model = tiny_llama(seed=0)
    rows = [[5 + (7 * i + j) % 90 for j in range(12)] for i in range(8)]
    seqs = of(rows)
    seen: list[torch.dtype] = []
    loss_of = nll_batch_loss(model, seqs, pad_id=0)

    def batch_loss(index: list[int]) -> torch.Tensor:
        """The NLL, recording the dtype the forward ran in."""
        loss = loss_of(index)
        seen.append(model.lm_head(torch.zeros(1, model.config.hidden_size)).dtype)
        return loss

    with torch.no_grad():
        first = float(loss_of(list(range(8))))
    log = train(model, len(rows), batch_loss, TrainConfig(epochs=30, batch_size=8, learning_rate=1e-2), autocast=dtype)
    assert set(seen) == {dtype}, "the forward did not run under autocast"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert log.epoch_losses[-1] < 0.7 * first, (first, log.epoch_losses)


# --- the process's compute section: threads, cache tokens, the record in metrics, bad values ------------------

def _params_with(tmp_path: Path, **compute: object) -> str:
    """A copy of params.yaml with `compute` keys replaced."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["compute"].update(compute)
    path = tmp_path / f"params-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return str(path)


def test_cache_tokens_follow_the_dtype_not_the_threads(tmp_path: Path) -> None:
    """A result computed in bfloat16 is never served from float32's cache; the thread count changes no token."""
    threads = torch.get_num_threads()
    try:
        tasks.use_compute(_params_with(tmp_path, dtype="float32", threads=1))
        assert torch.get_num_threads() == 1
        full = tasks.make_token(model="m", cfg=[1, 2])
        tasks.use_compute(_params_with(tmp_path, dtype="float32", threads=2))
        assert tasks.make_token(model="m", cfg=[1, 2]) == full
        tasks.use_compute(_params_with(tmp_path, device="cpu", dtype="bfloat16", threads=1))
        assert tasks.make_token(model="m", cfg=[1, 2]) != full
        assert tracking.compute_params()["compute.dtype"] == "bfloat16"
        record = tasks.compute_record(tiny_llama().to(torch.bfloat16))
        assert record["dtype"] == "bfloat16" and record["device"] == "cpu" and record["torch"] == torch.__version__
    finally:
        tasks.use_compute(_params_with(tmp_path, threads=threads))


@pytest.mark.parametrize("compute, needle", [
    ({"device": "tpu"}, "device='tpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
    ({"device": f"cuda:{torch.cuda.device_count()}"}, "compute.device='cuda:"),
    ({"dtype": "half"}, "dtype='half'; allowed: float32, bfloat16, float16"),
])
def test_a_stage_rejects_bad_compute_in_one_line(tmp_path: Path, compute: dict, needle: str) -> None:
    """Any stage stops on a bad compute value before it starts: one line naming it, exit code 2, no output."""
    env = {**os.environ, "UNLEARN_PARAMS": _params_with(tmp_path, **compute), "PREFECT_HOME": str(tmp_path / "pf")}
    result = subprocess.run([sys.executable, "-m", "flows.causal_base"], cwd=tmp_path, env={**env,
                            "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "data").exists()
