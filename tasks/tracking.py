"""MLflow logging: one run per method x category with the same metric names for every method."""
from __future__ import annotations

import json
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


# The runs table's saved views (MLflow UI, "Views" beside the search box, or ?viewStateShareKey=<key>): each
# stage's runs with its key metrics as columns. key -> (view name, stage tag, tag columns, metric columns).
VIEWS: dict[str, tuple[str, str, list[str], list[str]]] = {
    "masked-lm": ("Masked LM: forgetting vs utility", "evaluate", ["method", "category"],
                  ["privacy_before", "privacy", "retrain_privacy", "valid_ppl_before", "valid_ppl",
                   "retrain_valid_ppl", "neurons_edited", "time_s"]),
    "causal-lm": ("Causal LM: forgetting vs utility", "causal_evaluate", ["method"],
                  ["original_ma", "ma", "el", "mia_distance", "ppl_valid", "ppl_public", "reached", "changed_frac",
                   "time_s"]),
    "benchmarks": ("Benchmarks (TOFU, LUME)", "bench_unlearn", ["benchmark", "method"],
                   ["forget_quality", "model_utility", "aggregate", "mia_auc", "forget_overall_regurgitation",
                    "retain_overall_regurgitation", "reached", "time_s"]),
    "experiments": ("Experiments (seeds, budgets, noise, decay)", "experiments", ["experiment", "method", "category"],
                    ["privacy", "valid_ppl", "forget_gap", "neurons_edited"]),
    "attacks": ("Attacks: does the forgetting hold?", "attack", ["track", "method", "category"],
                ["direct.span_ma", "int8.span_ma", "int4.span_ma", "sampling.leak_at_8", "candidates.hit_at_8",
                 "logit_lens.best_top1", "paraphrase.span_ma", "relearn.10.span_ma", "mia.auc_loss",
                 "mia.auc_reference"]),
    "calibration": ("Methods at equal forgetting (calibration)", "calibrate", ["method", "category"],
                    ["reached", "valid_ppl", "gap_ratio", "valid_ppl_before", "gap_before", "n_trials"]),
    "requests": ("Deletion requests", "request", ["request", "method", "seq"],
                 ["items", "memorized", "forgotten", "resurfaced", "audited", "utility_before", "utility_after"]),
}
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the runs table, not the GenAI pages
VIEW_TAG = "mlflow.sharedViewState."


def view_tags() -> dict[str, str]:
    """Experiment tags: the kind, and one saved view per VIEWS entry (a JSON envelope the UI lists and opens)."""
    def state(stage: str, tag_cols: list[str], metric_cols: list[str]) -> str:
        columns = ([f"tags.`{t}`" for t in tag_cols] + [f"metrics.`{m}`" for m in metric_cols])
        return json.dumps({"searchFilter": f"tags.stage = '{stage}'", "orderByKey": "attributes.start_time",
                           "orderByAsc": False, "selectedColumns": columns})

    envelope = {key: json.dumps({"name": name, "createdAt": 0, "updatedAt": 0, "state": state(stage, tags, metrics)})
                for key, (name, stage, tags, metrics) in VIEWS.items()}
    return {EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1], **{VIEW_TAG + key: value for key, value in envelope.items()}}


def experiment_id(cfg: MlflowConfig) -> str:
    """Create or fetch the experiment (fixed artifact location beside the store) and set its views."""
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking_uri)
    found = mlflow.get_experiment_by_name(cfg.experiment)
    if found is None:
        location = Path(cfg.artifact_location).resolve().as_uri()
        exp_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
    else:
        exp_id = found.experiment_id
    missing = {k: v for k, v in view_tags().items() if found is None or found.tags.get(k) != v}
    for key, value in missing.items():
        mlflow.MlflowClient().set_experiment_tag(exp_id, key, value)
    return exp_id


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
        _record(tags, params, metrics)
        for name, content in (artifacts or {}).items():
            mlflow.log_dict(content, name)
        return run.info.run_id


def _record(tags: dict[str, str], params: dict[str, Any], metrics: dict[str, float]) -> None:
    """Tags (with the git commit), flat params (with the compute settings) and metrics of the active run."""
    import mlflow

    mlflow.set_tags({**tags, "git_sha": git_sha()})
    mlflow.log_params({k: str(v)[:500] for k, v in {**params, **compute_params()}.items()})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


@task(name="log-mlflow-study", task_run_name="mlflow-study-{tags[method]}-{tags[category]}", retries=2,
      retry_delay_seconds=2, cache_policy=NO_CACHE)
def log_study_task(cfg: MlflowConfig, run_name: str, tags: dict[str, str], params: dict[str, Any],
                   metrics: dict[str, float], children: list[tuple[str, dict[str, Any], dict[str, float]]]) -> str:
    """Record a search as one run and each of its trials as a child run (tag stage = <stage>_trial, so the
    stage's saved view lists the searches); returns the parent's MLflow run id."""
    import mlflow

    _ensure_store_dir(cfg.tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id(cfg), run_name=run_name) as run:
        _record(tags, params, metrics)
        for name, child_params, child_metrics in children:
            # the parent's experiment named: a nested run would otherwise go to the default experiment
            with mlflow.start_run(experiment_id=run.info.experiment_id, run_name=name, nested=True):
                _record({**tags, "stage": f"{tags['stage']}_trial"}, child_params, child_metrics)
        return run.info.run_id
