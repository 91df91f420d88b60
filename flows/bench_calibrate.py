"""DVC stage `bench_calibrate@<run>-<method>`: a benchmark run's methods compared at equal forgetting (lib.core.
calibration, as the causal track's `causal_calibrate@<method>`).

A seeded Optuna search over the method's strength fields (`benchmarks.calibration.spaces.<method>`) for the lowest
perplexity of the run's retain pairs (D_r, the side the benchmark scores utility on) whose forget gap, the distance
of D_f's MA to the run's reference model's (trained without D_f), is at most `benchmarks.calibration.target` times
the fine-tuned model's. A trial is the method at those values on a copy of the fine-tuned model without the stop
rule, from the inputs bench_unlearn gives it (tasks.bench_methods), content-cached by Prefect (tasks.causal_runs),
and an MLflow child run of the search's run (tags stage = calibrate, benchmark = <run>)."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import BENCH_SETS, METRICS, bench_finetuned, bench_prepared, bench_reference_model, main
from lib.bench.suites import BenchConfig, run_suite, suite
from lib.core.calibration import CalibrationConfig, check_space, study_record
from lib.core.io import file_digest, write_json
from lib.core.params import ParamsError, load_params
from lib.methods import check_track, get
from tasks import load_model_task, use_compute
from tasks.bench_methods import method_config, require_run, run_inputs
from tasks.causal_runs import calibrate
from tasks.tracking import log_study_task

CALIBRATION = METRICS / "calibration" / "bench"  # <run>/<method>.json


def runs(run: str, method: str) -> list[str]:
    """Modules the stage imports by name for its arguments (read by the dvc.yaml deps generator)."""
    return [get(method).__name__, suite(run_suite(run)[0]).__name__]


def config(run: str, method: str, params_file: str) -> dict[str, Any]:
    """`benchmarks.calibration`, the method's section and space, the run (prepared) and what unlearning on it reads;
    checked before any work."""
    params = load_params(params_file)
    cal = params.get("benchmarks.calibration", CalibrationConfig)
    if method not in cal.methods:
        raise ParamsError(f"method {method!r} is not calibrated on the benchmarks; allowed: {', '.join(cal.methods)}")
    check_track(method, "benchmarks.calibration.methods", "causal")
    check_space(get(method).Config, cal.spaces[method], f"benchmarks.calibration.spaces.{method}")
    bench = params.get("benchmarks", BenchConfig)
    require_run(bench, run, (bench_finetuned(run_suite(run)[0]), bench_reference_model(run)))
    return {**method_config(params, run, method), "calibration": cal}


@flow(name="bench-calibrate")
def calibrate_flow(run: str, method: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Search the method's calibrated point on a benchmark run; numbers to metrics/calibration/bench/<run>/<method>.json."""
    use_compute(params_file)
    cfg = config(run, method, params_file)
    finetuned = bench_finetuned(run_suite(run)[0])
    model, _, inputs = run_inputs(run, method, cfg, BENCH_SETS, bench_prepared(run), finetuned)
    reference = load_model_task(str(bench_reference_model(run)), "causal")[0]
    out = calibrate(model, reference, method, cfg["section"], inputs, inputs.retain, cfg["bench"].batch_size,
                    cfg["calibration"], file_digest(finetuned / "model.safetensors"))
    out["run"] = run
    write_json(CALIBRATION / run / f"{method}.json", out)
    if out["reached"] is None:  # nothing to forget: no search ran
        return out
    log_study_task(cfg["mlflow"], f"bench-calibrate-{run}-{method}",
                   {"method": method, "category": run, "benchmark": run, "stage": "calibrate", "track": "benchmarks"},
                   {**(out["best"] or {}).get("values", {}), "target": out["target"], "model": cfg["model"]},
                   *study_record(out))
    get_run_logger().info("%s / %s: %s after %d trials: %s", run, method,
                          "reached" if out["reached"] else "not reached", len(out["trials"]), out["best"])
    return out


if __name__ == "__main__":
    main(calibrate_flow, check=config)
