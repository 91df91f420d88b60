"""DVC stage `bench_unlearn@<run>-<method>`: unlearn the run's forget set with one method, then score it.

`python -m flows.bench_unlearn <run> <method>`. The edited model is scored in the same process and not saved:
a benchmark stage keeps the scores (metrics/bench/<run>/<method>.json), not 20 half-gigabyte checkpoints.
"""
from __future__ import annotations

from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import BENCH_METRICS, BENCH_SETS, bench_finetuned, bench_prepared, main
from lib.bench.qa import encode_pairs_file
from lib.bench.suites import BenchConfig, run_suite, suite
from lib.core.io import read_json, read_jsonl, write_json
from lib.core.params import Natural, NonEmpty, load_params
from lib.families.causal import CausalFamily, of
from lib.core.statistics import NeuronsConfig
from lib.methods import STATISTICS, Inputs, Stats, check_track, get, make_config
from tasks import compute_record, load_model_task, use_compute
from tasks.bench import eval_sets, suite_config
from tasks.tracking import MlflowConfig, log_run_task
from tasks.statistics import causal_statistics
from tasks.unlearn import unlearn_task

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
    params = load_params(params_file)
    section = params.get(f"benchmarks.methods.{method}")
    return {"bench": params.get("benchmarks", BenchConfig), "suite": suite_config(params, run),
            "seed": params.get("seed", Natural), "mlflow": params.get("mlflow", MlflowConfig),
            "model": params.get("causal.model", NonEmpty), "section": section,
            "neurons": params.get("benchmarks.neurons", NeuronsConfig),
            "method": make_config(method, section, where=f"benchmarks.methods.{method}"),
            "params_hash": params.fingerprint("seed", f"benchmarks.methods.{method}", "benchmarks.batch_size", "benchmarks.neurons",
                                              f"benchmarks.{run_suite(run)[0]}", "causal.model")}


def bench_inputs(model: Any, tokenizer: Any, run: str, cfg: dict[str, Any], needs: tuple[str, ...]) -> Inputs:
    """D_f, D_r, NeuMuter's neighbours, the stop threshold and (for a neuron method) D_f's statistics of a run."""
    max_len = cfg["suite"].max_len
    near = [tokenizer(r["text"], add_special_tokens=False)["input_ids"][:max_len]
            for r in read_jsonl(bench_prepared(run) / "neighbours.jsonl")]
    family = CausalFamily(tokenizer, cfg["bench"].batch_size)
    forget = encode_pairs_file(tokenizer, BENCH_SETS / run / "forget.jsonl", max_len)
    stats = causal_statistics(model, bench_finetuned(run_suite(run)[0]), family, forget, cfg["neurons"], run) \
        if set(STATISTICS) & set(needs) else Stats()
    return Inputs(family=family, forget=forget, neighbours=of(near), stats=stats,
                  retain=encode_pairs_file(tokenizer, BENCH_SETS / run / "retain.jsonl", max_len),
                  stop=read_json(bench_prepared(run) / "thresholds.json")["ma"], seed=cfg["seed"])


@flow(name="bench-unlearn")
def unlearn_flow(run: str, method: str, params_file: str = "params.yaml") -> dict:
    """Unlearn with one method, score the result beside the original and reference, log to MLflow."""
    use_compute(params_file)
    cfg = config(run, method, params_file)
    name = run_suite(run)[0]
    model, tokenizer = load_model_task(str(bench_finetuned(name)), "causal")
    torch.manual_seed(cfg["seed"])
    inputs = bench_inputs(model, tokenizer, run, cfg, tuple(get(method).needs))
    outcome = unlearn_task(method, run, model, inputs, cfg["method"], k_max=cfg["neurons"].k_max)
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
