"""DVC stage bench_unlearn@<run>-<method>: unlearn the run's forget set with one method, then score it.

`python -m flows.bench_unlearn <run> <method>`. The edited model is scored in the same process and not saved:
a benchmark stage keeps the scores (metrics/bench/<run>/<method>.json), not 20 half-gigabyte checkpoints.
"""
from __future__ import annotations

import sys

import torch
from prefect import flow, get_run_logger

from flows.bench_bag import METRICS, SETS, encode, finetuned, prepared, suite_params, thresholds
from flows.bench_eval import evaluate_loaded, flat, with_reference
from flows.causal_unlearn import unlearn_task
from flows.cli import params_path, run_stage
from lib.causal.batching import of
from lib.causal.methods import get_causal_method
from lib.causal.methods.base import Thresholds, UnlearnInputs
from lib.io import json_digest, read_jsonl, write_json
from lib.params import Params, load_params, run_suite, section
from tasks.causal import load_causal_task
from tasks.common import set_threads
from tasks.tracking import log_run_task


# what a method's report adds to the metrics file (per-sample lists and neuron ids stay out: they are large)
DETAILS = ("history", "neurons_per_layer", "critical_per_layer", "critical_total", "attribution_seconds",
           "pruned", "pruned_per_layer", "accuracy", "optimizer", "learning_rate", "lam")


def bench_inputs(tokenizer, run: str, params: Params) -> UnlearnInputs:
    """D_f, D_r, NeuMuter's neighbours and the stop thresholds of a run, as token sequences."""
    bench = params.benchmarks
    max_len = suite_params(bench, run).max_len
    near = [tokenizer(r["text"], add_special_tokens=False)["input_ids"][:max_len]
            for r in read_jsonl(prepared(run) / "neighbours.jsonl")]
    limits = thresholds(run)
    return UnlearnInputs(encode(tokenizer, SETS / run / "forget.jsonl", max_len), Thresholds(limits["ma"], limits["el"]),
                         tokenizer.pad_token_id, neighbours=of(near),
                         retain=encode(tokenizer, SETS / run / "retain.jsonl", max_len), batch_size=bench.batch_size)


@flow(name="bench-unlearn")
def unlearn_flow(run: str, name: str, params_file: str = "params.yaml") -> dict:
    """Unlearn with one method, score the result beside the original and reference, log to MLflow."""
    params = load_params(params_file)
    bench = params.benchmarks
    model, tokenizer = load_causal_task(str(finetuned(run_suite(run)[0])))
    torch.manual_seed(params.seed)
    report, seconds = unlearn_task(name, model, bench_inputs(tokenizer, run, params),
                                   getattr(bench.methods, name), params.seed)
    scores = with_reference(evaluate_loaded(model, tokenizer, run, bench), run)
    out = {"method": name, "run": run, "seconds": round(seconds, 2), "reached": report.reached,
           "strength": report.strength, "strength_name": report.strength_name, "steps": report.steps,
           "changed_frac": report.changed / report.total, "trainable_frac": report.trainable / report.total,
           "thresholds": thresholds(run), "config": section(params, f"benchmarks.methods.{name}"),
           "details": {k: v for k, v in report.details.items() if k in DETAILS},
           "scores": scores}
    write_json(METRICS / run / f"{name}.json", out)
    _log(params, run, name, out)
    get_run_logger().info("%s / %s: reached=%s in %.1f s", run, name, report.reached, seconds)
    return out


def _log(params: Params, run: str, name: str, out: dict) -> None:
    """One MLflow run per (benchmark run, method): the method's params, every scalar score, the cost."""
    metrics = {**flat(out["scores"], run), "time_s": out["seconds"], "reached": float(out["reached"]),
               "changed_frac": out["changed_frac"], "strength": float(out["strength"])}
    tags = {"method": name, "category": run, "benchmark": run, "stage": "bench_unlearn", "track": "benchmarks",
            "model": params.causal.model, "params_hash": json_digest(section(params, "benchmarks"))[:12]}
    log_run_task(params.mlflow, f"{run}-{name}", tags, section(params, f"benchmarks.methods.{name}"), metrics,
                 {"scores.json": out["scores"]})


def _check(run: str, name: str) -> None:
    """Unknown runs or methods fail before any work."""
    run_suite(run)
    get_causal_method(name)


if __name__ == "__main__":
    set_threads()
    if len(sys.argv) != 3:
        print("usage: python -m flows.bench_unlearn <run> <method>", file=sys.stderr)
        sys.exit(2)
    run_stage(unlearn_flow, sys.argv[1], sys.argv[2], params_path(), check=lambda: _check(*sys.argv[1:]))
