"""MLflow logging: one run per method x category with the same metric names for every method."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from lib.core.params import NonEmpty, check_ranges
from tasks import compute_key


@dataclass(frozen=True)
class MlflowConfig:
    """The `mlflow` section: where runs are recorded."""

    tracking_uri: NonEmpty = "sqlite:///mlflow/mlflow.db"
    experiment: NonEmpty = "neuron-unlearning"
    artifact_location: NonEmpty = "mlflow/artifacts"

    def __post_init__(self) -> None:
        """Non-empty URI, experiment name and artifact folder."""
        check_ranges(self)


def compute_params() -> dict[str, str]:
    """Where the run computed: the compute section's device and dtype, torch and CUDA versions."""
    key = compute_key()
    return {"compute.device": key["device"], "compute.dtype": key["dtype"], "torch.version": torch.__version__,
            "torch.cuda": torch.version.cuda or "none"}


def git_sha() -> str:
    """The current commit, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def experiment_id(cfg: MlflowConfig) -> str:
    """Create or fetch the experiment with a fixed artifact location beside the store."""
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking_uri)
    found = mlflow.get_experiment_by_name(cfg.experiment)
    if found is not None:
        return found.experiment_id
    location = Path(cfg.artifact_location).resolve().as_uri()
    return mlflow.create_experiment(cfg.experiment, artifact_location=location)


def _ensure_store_dir(uri: str) -> None:
    """SQLite needs the database's folder to exist."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@task(name="log-mlflow-run", task_run_name="mlflow-{tags[method]}-{tags[category]}", retries=2,
      retry_delay_seconds=2, cache_policy=NO_CACHE)
def log_run_task(cfg: MlflowConfig, run_name: str, tags: dict[str, str], params: dict[str, Any],
                 metrics: dict[str, float], artifacts: dict[str, Any] | None = None) -> str:
    """Record one run (tags, flat params, metrics, small JSON artifacts); returns the MLflow run id."""
    import mlflow

    _ensure_store_dir(cfg.tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id(cfg), run_name=run_name) as run:
        mlflow.set_tags({**tags, "git_sha": git_sha()})
        mlflow.log_params({k: str(v)[:500] for k, v in {**params, **compute_params()}.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for name, content in (artifacts or {}).items():
            mlflow.log_dict(content, name)
        return run.info.run_id
