"""DVC stage `calibrate@<method>`: the masked track's methods compared at equal forgetting (lib.core.calibration).

Per category, a seeded Optuna search over the method's strength fields (`calibration.spaces.<method>`) for the
lowest validation perplexity that brings the privacy score's gap to the retrained model within
`calibration.target` times the fine-tuned model's gap. Every trial is an in-memory edit of the fine-tuned model
on the cached statistics (tasks.masked_runs, content-cached like the experiments stage's runs, so a rerun with
the same params costs nothing), and an MLflow child run of the search's run (tag stage = calibrate)."""
from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger

from flows import METRICS, main
from lib.core.calibration import CalibrationConfig, calibrated, check_space, frontier, search, study_record
from lib.core.io import write_json
from lib.core.metrics import forget_gap
from lib.core.params import Natural, load_params
from lib.data.records import PipelineConfig
from lib.families.masked import PRIVACY_METRIC
from lib.methods import get, make_config
from lib.reports.experiments import Spec
from tasks import use_compute
from tasks.masked_runs import Context, Settings, make_context, run_spec
from tasks.tracking import log_study_task

CALIBRATION = METRICS / "calibration"


def runs(method: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [get(method).__name__]


def config(method: str, params_file: str) -> tuple[CalibrationConfig, int, Settings]:
    """The `calibration` section, the seed and the runs' params; the method's space and section checked first."""
    params = load_params(params_file)
    cal = params.get("calibration", CalibrationConfig)
    if method not in cal.methods:
        raise ValueError(f"method {method!r} is not calibrated; allowed: {', '.join(cal.methods)}")
    section = params.get(f"methods.{method}")
    check_space(get(method).Config, cal.spaces[method], f"calibration.spaces.{method}")
    categories = tuple(params.get("pipeline", PipelineConfig).categories)
    for category in categories:
        make_config(method, section, category)
    return cal, params.get("seed", Natural), Settings.read(params, categories, {method: section})


def mean(scores: dict[str, float]) -> float:
    """The mean score of a category's secrets."""
    return sum(scores.values()) / len(scores)


def study(ctx: Context, method: str, category: str, cal: CalibrationConfig, seed: int) -> dict[str, Any] | None:
    """The search on one category; None when the category memorized nothing or the fine-tuned model is already
    at the retrained model's score (nothing to forget)."""
    metric, (ppl_before, before), (ppl_retrain, retrain) = (PRIVACY_METRIC[category], ctx.before[category],
                                                             ctx.retrain[category])
    gap_before = forget_gap(metric, mean(before), mean(retrain)) if before else 0.0
    if gap_before <= 0:
        return None

    def evaluate(values: dict[str, Any]) -> tuple[float, float]:
        """One cached edit: (validation PPL, gap ratio); ValueError when the method refuses the values."""
        record, _ = run_spec(ctx, Spec("calibrate", method, category, seed, tuple(sorted(values.items()))))
        if isinstance(record, str):
            raise ValueError(record)
        return record["valid_ppl"], record["forget_gap"] / gap_before

    trials = search(get(method).Config, cal.spaces[method], evaluate, cal)
    best, reached = calibrated(trials, cal.target)
    return {"metric": metric, "gap_before": gap_before, "valid_ppl_before": ppl_before,
            "retrain_valid_ppl": ppl_retrain, "target": cal.target, "reached": reached,
            "best": dataclasses.asdict(best) if best else None, "frontier": [t.number for t in frontier(trials)],
            "trials": [dataclasses.asdict(t) for t in trials]}


def log_study(ctx: Context, method: str, category: str, result: dict[str, Any]) -> None:
    """The search as an MLflow run (the calibrated point's numbers) with one child run per trial."""
    log_study_task(ctx.cfg.mlflow, f"calibrate-{method}-{category}",
                   {"method": method, "category": category, "stage": "calibrate", "privacy_metric": result["metric"]},
                   {**(result["best"] or {}).get("values", {}), "target": result["target"], "model": ctx.cfg.model},
                   *study_record(result))


@flow(name="calibrate")
def calibrate_flow(method: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Search each category's calibrated point of one method; numbers to metrics/calibration/<method>.json."""
    use_compute(params_file)
    cal, seed, settings = config(method, params_file)
    ctx = make_context(settings)
    out = {}
    for category in settings.categories:
        result = study(ctx, method, category, cal, seed)
        if result is None:
            continue
        out[category] = result
        log_study(ctx, method, category, result)
        best = result["best"]
        get_run_logger().info("%s %s: %s after %d trials: %s", method, category,
                              "reached" if result["reached"] else "not reached", len(result["trials"]), best)
    write_json(CALIBRATION / f"{method}.json", {"method": method, **out})
    return out


if __name__ == "__main__":
    main(calibrate_flow, check=config)
