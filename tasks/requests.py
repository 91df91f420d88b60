"""Prefect tasks of deletion requests: apply one (lib.deletion.service) and register the version in MLflow."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lib.deletion import service
from lib.deletion.service import Receipt
from tasks.tracking import MlflowConfig, _ensure_store_dir, experiment_id, git_sha


@task(name="deletion-request", task_run_name="request-{request}", cache_policy=NO_CACHE)
def submit_task(request: str, **kwargs: Any) -> Receipt:
    """Verify, forget, audit and commit one request (lib.deletion.service.submit); ids and numbers come back."""
    return service.submit(request=request, **kwargs)


@task(name="register-version", task_run_name="register-{entry[request]}", retries=2, retry_delay_seconds=2,
      cache_policy=NO_CACHE)
def register_task(cfg: MlflowConfig, name: str, entry: dict[str, Any], patch: Path, numbers: dict[str, float]) -> str:
    """An MLflow run holding the request's numbers, its ledger entry and patch, registered as a version of model
    `name` with alias `current`; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    _ensure_store_dir(cfg.tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id(cfg), run_name=f"request-{entry['request']}") as run:
        mlflow.set_tags({"stage": "request", "request": entry["request"], "method": entry["method"],
                         "seq": str(entry["seq"]), "model_digest": entry["child"], "git_sha": git_sha()})
        mlflow.log_metrics({k: float(v) for k, v in numbers.items()})
        mlflow.log_dict(json.loads(json.dumps(entry)), "ledger_entry.json")
        mlflow.log_artifact(str(patch), "patch")
        client = MlflowClient()
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="Versions of the default model under deletion requests: "
                                                             "base + the ledger's patches (`unlearn model export`)")
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/patch", run_id=run.info.run_id,
                                              tags={"request": entry["request"], "seq": str(entry["seq"]),
                                                    "model_digest": entry["child"]})
        client.set_registered_model_alias(name, "current", version.version)
    return str(version.version)
