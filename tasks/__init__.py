"""Prefect tasks: thin wrappers (load -> one lib call -> save), the plumbing every task shares, model I/O.

Importing this package first switches telemetry off and makes every library offline-safe, before
Prefect, MLflow or DVC are imported. Cached tasks are keyed by content: a token built from the
digests of what they read (model weights, rows, param subsets) and of the code that computes them
(the import closure of that code, lib.core.closure), never by a path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# Telemetry off and everything offline-safe before prefect/mlflow/dvc are imported.
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)
os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))

import torch  # noqa: E402
from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.context import TaskRunContext  # noqa: E402
from transformers import PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from lib.core.io import InputError, atomic_dir, closure_digest, json_digest  # noqa: E402
from lib.core.models import (DTYPES, ComputeConfig, cpu_threads, load_model, ray_workers,  # noqa: E402
                             resolve_device, save_model, task_threads)
from lib.core.params import load_params  # noqa: E402

# a Ray worker runs elsewhere: UNLEARN_ROOT is the stage's folder, where its caches live
CACHE_DIR = Path(os.environ["UNLEARN_ROOT"]) / ".cache" if "UNLEARN_ROOT" in os.environ else Path(".cache")
RESULTS_DIR = CACHE_DIR / "prefect-results"
STORE_DIR = CACHE_DIR / "store"


def token_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key = task name + the caller's content token (digests of inputs, params, code)."""
    return f"{context.task.name}-{parameters['cache_token']}"


def cached_task_options() -> dict[str, Any]:
    """Task options for content-keyed caching whose results are small JSON values."""
    return {
        "cache_key_fn": token_cache_key,
        "persist_result": True,
        "result_storage": RESULTS_DIR.resolve(),
        "result_serializer": "json",
    }


def code_digest(*modules: ModuleType) -> str:
    """Digest of the code a cached result depends on: the import closure of the given modules."""
    return closure_digest([module.__name__ for module in modules])


_COMPUTE = [ComputeConfig()]  # the `compute` section this process runs under (use_compute sets it)


def use_compute(params_file: str) -> ComputeConfig:
    """Read the `compute` section and run this process under it (set_compute)."""
    return set_compute(load_params(params_file).get("compute", ComputeConfig))


def set_compute(cfg: ComputeConfig) -> ComputeConfig:
    """Run under `cfg`: torch's CPU threads set from it; later model loads, tasks and cache tokens follow it."""
    device = resolve_device(cfg.device)  # a device this machine lacks fails here, before any work
    if device.type == "cuda" and cfg.processes > torch.cuda.device_count():
        raise ValueError(f"compute.processes={cfg.processes} but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s); allowed: 1..{torch.cuda.device_count()} (one rank per GPU)")
    torch.set_num_threads(cpu_threads(cfg))
    _COMPUTE[0] = cfg
    return cfg


def compute_key() -> dict[str, str]:
    """What of the compute section changes results: the resolved device type and the dtype (not threads)."""
    return {"device": resolve_device(_COMPUTE[0].device).type, "dtype": _COMPUTE[0].dtype}


def compute_record(model: PreTrainedModel) -> dict[str, Any]:
    """Where a model really ran, for metrics JSON and MLflow: device, parameter dtype, torch and CUDA versions."""
    param = next(model.parameters())
    record = {"device": str(param.device), "dtype": str(param.dtype).removeprefix("torch."),
              "compute_dtype": _COMPUTE[0].dtype, "torch": torch.__version__, "cuda": torch.version.cuda or "none"}
    if param.device.type == "cuda":  # this process's peak so far (Ray tasks' peaks stay in their workers)
        record["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(param.device) / 2**20, 1)
    return record


def autocast_dtype() -> torch.dtype | None:
    """The dtype fine-tuning autocasts to (its weights stay float32), None for float32."""
    return None if _COMPUTE[0].dtype == "float32" else DTYPES[_COMPUTE[0].dtype]


# --- where a stage's tasks run: one after another here (runner: local) or on Ray (runner: ray) ------------------

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray socket on 127.0.0.1 (../shared/STACK.md)
           "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class ModelRef:
    """A saved model a task loads for itself where it runs (a Ray worker), named by its folder and content digest."""

    path: str  # absolute folder
    family: str
    digest: str


_MODELS: dict[ModelRef, PreTrainedModel] = {}  # this process's loaded models (a Ray worker keeps its own)


def share_model(ref: ModelRef, model: PreTrainedModel) -> ModelRef:
    """Let tasks in this process use an already loaded model for `ref` (the local runner loads nothing twice)."""
    _MODELS.clear()  # one model at a time: a stage scores several models one after another
    _MODELS[ref] = model
    return ref


def shared(model: PreTrainedModel, folder: Path, family: str, digest: str) -> ModelRef:
    """The ref of a model loaded from `folder` (content `digest`), shared with this process's tasks."""
    return share_model(ModelRef(str(folder.resolve()), family, digest), model)


def model_of(ref: ModelRef) -> PreTrainedModel:
    """The model for `ref` in this process: the shared one, or loaded once on this compute's device and dtype."""
    if ref not in _MODELS:
        share_model(ref, load_model(ref.path, ref.family, compute=_COMPUTE[0])[0])
    return _MODELS[ref]


def adopt(compute: ComputeConfig) -> None:
    """In a Ray worker: run under the stage's compute section with task_threads threads (no-op in the stage)."""
    if os.environ.get("UNLEARN_RAY_WORKER") == "1" and _COMPUTE[0] != compute:
        _COMPUTE[0] = compute
        torch.set_num_threads(task_threads(compute))


def current_compute() -> ComputeConfig:
    """The compute section this process runs under."""
    return _COMPUTE[0]


def task_runner() -> Any:
    """The stage flow's task runner: one task at a time in this process, or prefect-ray's RayTaskRunner."""
    cfg = _COMPUTE[0]
    if cfg.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)  # a loop's order and RNG: the same results as direct calls
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if "PREFECT_API_URL" not in os.environ:  # else every Ray worker starts a Prefect server of its own
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the one this process's flow run would start (stopped at exit)
        server.start()
        os.environ["PREFECT_API_URL"] = server.api_url
    from prefect_ray import RayTaskRunner

    names = (*QUIET_ENV, *RAY_ENV, "PREFECT_HOME", "PREFECT_API_URL")
    env = {key: os.environ[key] for key in names if key in os.environ}
    env.update(UNLEARN_RAY_WORKER="1", UNLEARN_ROOT=str(Path.cwd()))
    init: dict[str, Any] = {"runtime_env": {"env_vars": env}, "logging_level": "warning"}
    if cfg.ray_address is None:  # a local Ray for this stage: loopback only, no dashboard, `workers` slots
        init.update(address="local", num_cpus=ray_workers(cfg) * task_threads(cfg), include_dashboard=False)
        return RayTaskRunner(init_kwargs=init)
    return RayTaskRunner(address=cfg.ray_address, init_kwargs=init)


def resources() -> dict[str, float]:
    """What one task asks Ray for: its threads as CPUs, and one GPU when the compute device is CUDA."""
    cfg = _COMPUTE[0]
    return {"num_cpus": task_threads(cfg), "num_gpus": 1 if resolve_device(cfg.device).type == "cuda" else 0}


def run_all(task_fn: Any, calls: list[dict[str, Any]]) -> list[Any]:
    """Submit one task per call (keyword arguments) to the flow's task runner; their results in call order."""
    if _COMPUTE[0].runner == "local":
        return [task_fn(**call) for call in calls]  # in order, in this process: exactly a loop
    from prefect_ray.context import remote_options

    with remote_options(**resources()):
        futures = [task_fn.submit(**call) for call in calls]
    return [future.result() for future in futures]


def make_token(**parts: Any) -> str:
    """A cache token from named parts (digests, param subsets) and the compute they run under."""
    return json_digest({**parts, "compute": compute_key()})[:32]


def store_path(token: str) -> Path:
    """Where a cached tensor result for `token` lives (outside every DVC output)."""
    return STORE_DIR / f"{token}.safetensors"


# errors a retry cannot fix: bad input, and file-system answers that stay the same
PERMANENT = (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry an OSError that may pass (the hub, the network, a busy disk), never bad input."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, OSError) and not isinstance(error, PERMANENT)


@task(name="load-model", retries=2, retry_delay_seconds=5, retry_condition_fn=transient, cache_policy=NO_CACHE)
def load_model_task(source: str, family: str, seed: int = 0,
                    float32: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a masked or causal LM (embedded name, hub name or local folder) on the compute device, in its dtype
    (`float32`: float32 weights, for the stages that fine-tune under autocast or convert); retried: the hub, a disk
    error that may pass (`transient`), never a missing or broken model folder."""
    cfg = _COMPUTE[0]
    return load_model(source, family, seed=seed,
                      compute=ComputeConfig(cfg.device, "float32", cfg.threads) if float32 else cfg)  # one device


@task(name="save-model", cache_policy=NO_CACHE)
def save_model_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save a checkpoint folder atomically as safetensors."""
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp)
