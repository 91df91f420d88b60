"""Shared Prefect plumbing: environment, content-hash cache keys, the result store."""
from __future__ import annotations

import os
from pathlib import Path
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
from prefect.context import TaskRunContext  # noqa: E402

from lib.io import file_digest, json_digest  # noqa: E402

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


def code_digest(*modules: Any) -> str:
    """Digest of the source files of the given modules (the 'code version' part of a key)."""
    return json_digest([file_digest(Path(m.__file__)) for m in modules])


def make_token(**parts: Any) -> str:
    """A cache token from named parts (digests, param subsets)."""
    return json_digest(parts)[:32]


def store_path(token: str) -> Path:
    """Where a cached tensor result for `token` lives (outside every DVC output)."""
    return STORE_DIR / f"{token}.safetensors"


def set_threads() -> None:
    """Use every core for torch (DVC stages run one at a time)."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
