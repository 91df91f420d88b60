"""Prefect tasks: thin wrappers (load -> one lib call -> save), the plumbing every task shares, model I/O.

Importing this package first switches telemetry off and makes every library offline-safe, before
Prefect, MLflow or DVC are imported. Cached tasks are keyed by content: a token built from the
digests of what they read (model weights, rows, param subsets) and of the code that computes them
(the import closure of that code, lib.core.closure), never by a path.
"""
from __future__ import annotations

import os
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

from lib.core.io import atomic_dir, closure_digest, json_digest  # noqa: E402
from lib.core.models import load_model, save_model  # noqa: E402

CACHE_DIR = Path(".cache")
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


def make_token(**parts: Any) -> str:
    """A cache token from named parts (digests, param subsets)."""
    return json_digest(parts)[:32]


def store_path(token: str) -> Path:
    """Where a cached tensor result for `token` lives (outside every DVC output)."""
    return STORE_DIR / f"{token}.safetensors"


def set_threads() -> None:
    """Use every core for torch (DVC stages run one at a time)."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))


@task(name="load-model", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_model_task(source: str, family: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a masked or causal LM (embedded name, hub name or local checkpoint folder) in fp32 (retried: disk, hub)."""
    return load_model(source, family, seed=seed)


@task(name="save-model", cache_policy=NO_CACHE)
def save_model_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save a checkpoint folder atomically as safetensors."""
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp)
