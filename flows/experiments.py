"""DVC stage `experiments`: the SNKU paper's tables and figures as cached in-memory runs.

Every run (lib.reports.experiments.Spec) edits a copy of the fine-tuned model with one method and
evaluates it; its result is a Prefect task result keyed by the content of everything it reads
(model, the statistics and samples the method needs, its params, seed, evaluation params, the
import closure of its code), so changing one method's params re-runs only that method's runs.
Full-bag runs reuse the DVC outputs of activations / attribution / clustering / ig; seesaw runs
compute the forget subset's statistics with the same per-shard (IG: per-secret) cached tasks.
"""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import MASKED_METRICS, main
from lib.core.io import write_json
from lib.core.params import Natural, load_params
from lib.data.records import PipelineConfig
from lib.methods import get, make_config
from lib.reports.experiments import ExperimentsConfig, Plan, Spec, check_budget, experiment_specs
from tasks import use_compute
from tasks.masked_runs import Context, Settings, make_context, run_spec
from tasks.tracking import log_run_task


def config(params_file: str) -> tuple[Plan, Settings]:
    """The stage's plan and params, every method section checked against its Config (bad values fail before any
    work)."""
    params, plan = load_params(params_file), config_plan(params_file)
    check_budget(plan.experiments.budget.methods, params.get("methods"))
    methods = sorted({s.method for s in experiment_specs(plan)})
    sections = {m: params.get(f"methods.{m}") for m in methods}
    for name in methods:
        for category in plan.pipeline.categories:
            make_config(name, sections[name], category)
    return plan, Settings.read(params, plan.pipeline.categories, sections, plan.experiments.seesaw.seed)


def runs() -> list[str]:
    """Modules the stage imports by name: every method its specs run (read by the dvc.yaml deps generator)."""
    plan = config_plan()
    return [get(m).__name__ for m in sorted({s.method for s in experiment_specs(plan)})]


def config_plan(params_file: str = "params.yaml") -> Plan:
    """The experiments plan of a params file."""
    params = load_params(params_file)
    return Plan(params.get("seed", Natural), params.get("pipeline", PipelineConfig),
                params.get("experiments", ExperimentsConfig))


def log_record(cfg: Settings, spec: Spec, record: dict[str, Any]) -> None:
    """One MLflow run per newly computed experiment run (same metric names as evaluate)."""
    metrics = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ("seed", "k", "sigma", "alpha", "forget_fraction")}
    knobs = {k: record[k] for k in ("k", "sigma", "alpha", "rank_by", "forget_fraction") if record.get(k) is not None}
    log_run_task(cfg.mlflow, spec.label,
                 tags={"method": spec.method, "category": spec.category, "stage": "experiments",
                       "experiment": spec.experiment, "privacy_metric": record["privacy_metric"]},
                 params={**knobs, "seed": spec.seed, "model": cfg.model}, metrics=metrics)


def run_logged(ctx: Context, spec: Spec) -> dict[str, Any] | str:
    """One spec's record (an MLflow run when newly computed), or the reason the method rejected its config."""
    record, fresh = run_spec(ctx, spec)
    if isinstance(record, str):
        get_run_logger().warning("skipped %s: %s", spec.label, record)
    elif fresh:
        log_record(ctx.cfg, spec, record)
    return record


@flow(name="experiments")
def experiments_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    """Run every experiment spec and write metrics/experiments.json."""
    use_compute(params_file)
    plan, cfg = config(params_file)
    ctx = make_context(cfg)
    specs = experiment_specs(plan)
    results = [(s, run_logged(ctx, s)) for s in specs]
    records = [r for _, r in results if isinstance(r, dict)]
    skipped = [{"run": s.label, "reason": r} for s, r in results if isinstance(r, str)]
    write_json(MASKED_METRICS["experiments"], {"records": records, "skipped": skipped})
    get_run_logger().info("experiments: %d of %d runs recorded", len(records), len(specs))
    return {"records": records, "skipped": skipped}


if __name__ == "__main__":
    main(experiments_flow, check=config)
