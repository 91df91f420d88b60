"""DVC stage `bench_unlearn@<run>-<method>`: unlearn the run's forget set with one method, then score it.

`python -m flows.bench_unlearn <run> <method>`. The edited model is scored in the same process and not saved:
a benchmark stage keeps the scores (metrics/bench/<run>/<method>.json), not 20 half-gigabyte checkpoints.
"""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import BENCH_METRICS, BENCH_SETS, bench_finetuned, bench_prepared, main
from lib.bench.suites import run_suite, suite
from lib.core.io import read_json, write_json
from lib.core.params import load_params
from lib.methods import check_track, get
from tasks import compute_record, use_compute
from tasks.bench import eval_sets
from tasks.bench_methods import method_config, unlearn_run
from tasks.tracking import log_run_task

# what a method's report adds to the metrics file (per-sample lists and neuron ids stay out: they are large)
DETAILS = ("history", "neurons_per_layer", "critical_per_layer", "critical_total", "attribution_seconds",
           "pruned", "pruned_per_layer", "accuracy", "optimizer", "learning_rate", "lam")


def runs(run: str, method: str) -> list[str]:
    """Modules the stage imports by name for its arguments (read by the dvc.yaml deps generator)."""
    return [get(method).__name__, suite(run_suite(run)[0]).__name__]


def config(run: str, method: str, params_file: str) -> dict[str, Any]:
    """The stage's params: `benchmarks`, the run's suite, the method's Config (bad values fail before any work)."""
    check_track(method, "benchmarks.pipeline", "causal")  # an unknown name lists the registered methods
    run_suite(run)
    return method_config(load_params(params_file), run, method)


@flow(name="bench-unlearn")
def unlearn_flow(run: str, method: str, params_file: str = "params.yaml") -> dict:
    """Unlearn with one method, score the result beside the original and reference, log to MLflow."""
    use_compute(params_file)
    cfg = config(run, method, params_file)
    name = run_suite(run)[0]
    model, tokenizer, outcome = unlearn_run(run, method, cfg, BENCH_SETS, bench_prepared(run), bench_finetuned(name))
    report, scored = outcome.report, suite(name)
    scores = scored.with_reference(scored.evaluate(model, tokenizer, eval_sets(BENCH_SETS, run), cfg["suite"],
                                                   cfg["bench"].batch_size),
                                   read_json(BENCH_METRICS / run / "reference.json"))
    out = {"method": method, "run": run, "seconds": round(outcome.seconds, 2), "reached": report.reached,
           "strength": report.strength, "strength_name": report.strength_name, "steps": report.steps,
           "changed_frac": outcome.changed / outcome.total, "trainable_frac": report.trainable / outcome.total,
           "thresholds": read_json(bench_prepared(run) / "thresholds.json"), "config": cfg["section"],
           "details": {k: v for k, v in report.details.items() if k in DETAILS}, "scores": scores,
           "compute": compute_record(model)}
    write_json(BENCH_METRICS / run / f"{method}.json", out)
    metrics = {**scored.flat(scores), "time_s": out["seconds"], "reached": float(out["reached"]),
               "changed_frac": out["changed_frac"], "strength": float(out["strength"])}
    tags = {"method": method, "category": run, "benchmark": run, "stage": "bench_unlearn", "track": "benchmarks",
            "model": cfg["model"], "params_hash": cfg["params_hash"]}
    log_run_task(cfg["mlflow"], f"{run}-{method}", tags, cfg["section"] or {}, metrics, {"scores.json": scores})
    get_run_logger().info("%s / %s: reached=%s in %.1f s", run, method, report.reached, outcome.seconds)
    return out


if __name__ == "__main__":
    main(unlearn_flow, check=config)
