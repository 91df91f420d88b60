"""DVC stages `bench_attack@<run>-<method>` and `bench_attack_reference@<run>-<original|retrain>`: every attack of
lib.attacks.audit on one model of a benchmark run (LUME): D_f's answers as the secret spans, the forget split's
held-out rows as the never-trained texts, the run's reference model (trained without D_f) as the retrained one.

`python -m flows.bench_attack <run> <model>`. The benchmark track keeps no edited weights (bench_unlearn scores in
its process), so a method's model is unlearned again here, by the same code from the same inputs and seed; the
metrics file records that run's outcome beside the scored one's (`unlearning.same_as_scored`).
"""
from __future__ import annotations

import time
from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import (BENCH_METRICS, BENCH_SETS, METRICS, bench_finetuned, bench_prepared, bench_reference_model,
                   main)
from lib.attacks.audit import AttacksConfig, flat_metrics
from lib.bench.probe import pairs_probe
from lib.bench.suites import BenchConfig, attack_pairs, attack_ready, attackable, run_suite
from lib.core.io import read_json, write_json
from lib.core.params import ParamsError, load_params
from lib.families.causal import CausalFamily
from lib.methods import check_track, get
from tasks import load_model_task, use_compute
from tasks.attacks import attack_task, reference_stats
from tasks.bench import eval_sets, suite_config
from tasks.bench_methods import method_config, require_run, unlearn_run
from tasks.tracking import MlflowConfig, log_run_task

ATTACKS = METRICS / "attacks" / "bench"  # <run>/<model>.json
REFERENCES = ("original", "retrain")  # the rows beside the methods: the fine-tuned model, the run's reference
OUTCOME = ("reached", "strength", "steps")  # what must match the scored run's unlearning


def runs(run: str, name: str) -> list[str]:
    """Modules the stage imports by name for its arguments (read by the dvc.yaml deps generator)."""
    return [attackable(run).__name__, *([] if name in REFERENCES else [get(name).__name__])]


def config(run: str, name: str, params_file: str) -> dict[str, Any]:
    """The stage's params and inputs checked before any work: the `attacks` section, the run (prepared, its suite
    attackable), the method's Config for a method's model."""
    attackable(run)  # the command line's run (benchmarks.attack_runs is checked with its section)
    params = load_params(params_file)
    if name not in REFERENCES:
        check_track(name, "benchmarks.pipeline", "causal")  # an unknown name lists the registered methods
    bench, suite_cfg = params.get("benchmarks", BenchConfig), suite_config(params, run)
    try:
        attack_ready(run, suite_cfg)
    except ValueError as err:
        raise ParamsError(f"benchmark run {run!r} cannot be attacked: {err}") from None
    require_run(bench, run, (bench_finetuned(run_suite(run)[0]), bench_reference_model(run)))
    read = method_config(params, run, name) if name not in REFERENCES else {
        "bench": bench, "suite": suite_cfg, "mlflow": params.get("mlflow", MlflowConfig)}
    return {"attacks": params.get("attacks", AttacksConfig), **read}


def unlearned(run: str, name: str, cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The run's fine-tuned model unlearned by method `name` as bench_unlearn does it; its outcome beside the
    scored run's."""
    model, _, outcome = unlearn_run(run, name, cfg, BENCH_SETS, bench_prepared(run), bench_finetuned(run_suite(run)[0]))
    report = outcome.report
    done = {"reached": report.reached, "strength": report.strength, "steps": report.steps,
            "changed_frac": outcome.changed / outcome.total, "seconds": round(outcome.seconds, 2)}
    scored_file = BENCH_METRICS / run / f"{name}.json"
    scored = read_json(scored_file) if scored_file.is_file() else None
    done["same_as_scored"] = scored is not None and all(scored.get(k) == done[k] for k in OUTCOME)
    return model, done


@flow(name="bench-attack")
def attack_flow(run: str, name: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Every attack on one model of a benchmark run; numbers only to metrics/attacks/bench/<run>/<name>.json."""
    use_compute(params_file)
    cfg = config(run, name, params_file)
    started = time.perf_counter()
    parent, tokenizer = load_model_task(str(bench_finetuned(run_suite(run)[0])), "causal")
    reference = load_model_task(str(bench_reference_model(run)), "causal")[0]
    if name in REFERENCES:
        model, unlearning = (parent if name == "original" else reference), None
    else:
        model, unlearning = unlearned(run, name, cfg)
    probe = pairs_probe(tokenizer, attack_pairs(run, eval_sets(BENCH_SETS, run)),
                        CausalFamily(tokenizer, cfg["bench"].batch_size), cfg["suite"].max_len, cfg["attacks"])
    torch.manual_seed(cfg["attacks"].seed)
    stats = reference_stats(reference, bench_reference_model(run), probe, run)
    result = attack_task(f"{run}-{name}", model, stats, parent, probe, cfg["attacks"])
    out = {"model": name, "run": run, "n_forget": len(probe.forget), "n_holdout": len(probe.holdout), **result,
           **({"unlearning": unlearning} if unlearning else {}), "seconds": round(time.perf_counter() - started, 1)}
    write_json(ATTACKS / run / f"{name}.json", out)
    log_run_task(cfg["mlflow"], f"attack-{run}-{name}", {"method": name, "category": run, "benchmark": run,
                                                         "stage": "attack", "track": "benchmarks"},
                 {**vars(cfg["attacks"]), "n_forget": len(probe.forget)}, flat_metrics(result))
    if unlearning and not unlearning["same_as_scored"]:
        get_run_logger().warning("%s / %s: this unlearning's outcome differs from the scored run's "
                                 "(metrics/bench/%s/%s.json): other hardware or code", run, name, run, name)
    get_run_logger().info("%s / %s: span MA %.3f, leak %s, lens best top-1 %.3f, MIA AUC (loss) %.3f in %.0f s", run,
                          name, result["direct"]["span_ma"], result["sampling"], result["logit_lens"]["best_top1"],
                          result["mia"]["auc_loss"], out["seconds"])
    return out


if __name__ == "__main__":
    main(attack_flow, check=config)
