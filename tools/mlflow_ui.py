"""`make mlflow-ui`: the MLflow UI on the pipeline's store, opening on the runs table with each stage's key metrics.

Sets the experiment's kind (so the UI shows runs, not its GenAI traces pages) and its saved views
(tasks.tracking.VIEWS: one per stage, its runs with the key metrics as columns), prints a link per view, then
serves with one uvicorn worker and MLflow's job runner off (its GenAI scoring jobs start eight more processes,
about 2 GB, that this project never uses).
"""
from __future__ import annotations

import argparse
import os
import sys

import tasks  # noqa: F401  (telemetry off before mlflow is imported)
from flows import params_path
from lib.core.params import load_params
from tasks.tracking import VIEWS, MlflowConfig, _ensure_store_dir, experiment_id


def view_links(url: str, exp_id: str) -> list[str]:
    """One line per saved view: its name and the link that opens it."""
    return [f"  {name}: {url}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={key}"
            for key, (name, *_rest) in VIEWS.items()]


def main(argv: list[str] | None = None) -> None:
    """Set the views, print their links, exec `mlflow ui` (this process becomes it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    cfg = load_params(params_path()).get("mlflow", MlflowConfig)
    _ensure_store_dir(cfg.tracking_uri)
    exp_id = experiment_id(cfg)
    url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI: {url}  experiment {cfg.experiment!r}, views:", *view_links(url, exp_id), sep="\n", flush=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port),
                               "--workers", "1", "--backend-store-uri", cfg.tracking_uri], env)


if __name__ == "__main__":
    main()
