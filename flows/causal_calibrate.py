"""DVC stage `causal_calibrate@<method>`: the causal track's methods compared at equal forgetting (lib.core.
calibration, as the masked track's `calibrate@<method>`).

A seeded Optuna search over the method's strength fields (`causal.calibration.spaces.<method>`) for the lowest
held-out perplexity whose forget gap, the distance of D_f's MA to the retrained model's, is at most
`causal.calibration.target` times the fine-tuned model's. A trial is the method at those values on a copy of the
fine-tuned model without the Eq. 17 stop rule (lib.families.causal_trial), content-cached by Prefect
(tasks.causal_runs), and an MLflow child run of the search's run (tags stage = calibrate, category = causal:
the saved view "Methods at equal forgetting" lists both tracks' searches)."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import (CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, CAUSAL_METRICS, CAUSAL_RETRAINED, METRICS,
                   NEIGHBOURS, main)
from lib.core.calibration import CalibrationConfig, calibrated, check_space, frontier, search, study_record
from lib.core.io import file_digest, read_jsonl, write_json
from lib.core.params import Count, Natural, NonEmpty, ParamsError, load_params
from lib.core.statistics import NeuronsConfig
from lib.families.causal import encode_all
from lib.families.causal_trial import gap_ratio, scores
from lib.methods import check_track, get, make_config
from tasks import load_model_task, use_compute
from tasks.causal_inputs import causal_inputs, require_reference
from tasks.causal_runs import trial_task, trial_token
from tasks.tracking import MlflowConfig, log_study_task

CALIBRATION = METRICS / "calibration" / "causal"


def runs(method: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [get(method).__name__]


def config(method: str, params_file: str) -> dict[str, Any]:
    """`causal.calibration`, the method's section and space, and the sizes the track reads; checked before any work."""
    params = load_params(params_file)
    cal = params.get("causal.calibration", CalibrationConfig)
    if method not in cal.methods:
        raise ParamsError(f"method {method!r} is not calibrated on the causal track; allowed: {', '.join(cal.methods)}")
    check_track(method, "causal.calibration.methods", "causal")
    section = params.get(f"causal.methods.{method}")
    check_space(get(method).Config, cal.spaces[method], f"causal.calibration.spaces.{method}")
    make_config(method, section, where=f"causal.methods.{method}")
    require_reference((CAUSAL_FINETUNED, CAUSAL_RETRAINED), CAUSAL_METRICS / "retrain.json", "the calibration trials",
                      "causal_retrain")
    return {"calibration": cal, "section": section, "seed": params.get("seed", Natural),
            "max_len": params.get("causal.data.max_len", Count),
            "batch_size": params.get("causal.memorized.batch_size", Count),
            "n_valid": params.get("causal.memorized.n_valid", Count),
            "retain_samples": params.get("causal.retain_samples", Count),
            "neurons": params.get("causal.neurons", NeuronsConfig), "mlflow": params.get("mlflow", MlflowConfig),
            "model": params.get("causal.model", NonEmpty)}


def log_study(cfg: dict[str, Any], method: str, result: dict[str, Any]) -> None:
    """The search as an MLflow run (the calibrated point's numbers) with one child run per trial."""
    log_study_task(cfg["mlflow"], f"causal-calibrate-{method}",
                   {"method": method, "category": "causal", "stage": "calibrate", "track": "causal"},  # the view
                   {**(result["best"] or {}).get("values", {}), "target": result["target"], "model": cfg["model"]},
                   *study_record(result))


@flow(name="causal-calibrate")
def calibrate_flow(method: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Search the method's calibrated point on the causal track; numbers to metrics/calibration/causal/<method>.json."""
    use_compute(params_file)
    cfg = config(method, params_file)
    cal = cfg["calibration"]
    model, tokenizer = load_model_task(str(CAUSAL_FINETUNED), "causal")
    torch.manual_seed(cfg["seed"])
    inputs = causal_inputs(model, tokenizer, cfg, tuple(get(method).needs), CAUSAL_CORPUS, CAUSAL_MEMORIZED,
                           NEIGHBOURS, CAUSAL_FINETUNED)
    held = [(r["text"], None) for r in read_jsonl(CAUSAL_CORPUS / "valid.jsonl")[: cfg["n_valid"]]]
    valid, pad, size = encode_all(tokenizer, held, cfg["max_len"]), tokenizer.pad_token_id, cfg["batch_size"]
    before = scores(model, inputs.forget, valid, pad, size)
    retrained = scores(load_model_task(str(CAUSAL_RETRAINED), "causal")[0], inputs.forget, valid, pad, size)
    out: dict[str, Any] = {"method": method, "metric": "ma", "ma_before": before["ma"], "ma_retrain": retrained["ma"],
                           "valid_ppl_before": before["valid_ppl"], "retrain_valid_ppl": retrained["valid_ppl"],
                           "gap_before": before["ma"] - retrained["ma"], "target": cal.target}
    if out["gap_before"] <= 0:  # the fine-tuned model is no more accurate on D_f than retraining: nothing to forget
        write_json(CALIBRATION / f"{method}.json", {**out, "reached": None, "best": None, "frontier": [], "trials": []})
        return out
    digest = file_digest(CAUSAL_FINETUNED / "model.safetensors")

    def evaluate(values: dict[str, Any]) -> tuple[float, float]:
        """One cached trial: (held-out PPL, gap ratio); ValueError when the method refuses the values."""
        make_config(method, cfg["section"], None, values)  # a refused value fails here, before the task
        token = trial_token(digest, method, cfg["section"], values, inputs, valid, size)
        state = trial_task(model, method, cfg["section"], values, inputs, valid, size,
                           label=f"{method}-" + "-".join(f"{k}={v:.3g}" for k, v in values.items()),
                           cache_token=token, return_state=True)
        if state.is_failed():  # e.g. SNKU's clusters hold fewer neurons than a K tried
            raise ValueError(str(state.message).removeprefix("Task run encountered an exception "))
        record = state.result()
        return record["valid_ppl"], gap_ratio(record["ma"], before["ma"], retrained["ma"])

    trials = search(get(method).Config, cal.spaces[method], evaluate, cal)
    best, reached = calibrated(trials, cal.target)
    out.update(reached=reached, best=dataclasses.asdict(best) if best else None,
               frontier=[t.number for t in frontier(trials)], trials=[dataclasses.asdict(t) for t in trials])
    write_json(CALIBRATION / f"{method}.json", out)
    log_study(cfg, method, out)
    get_run_logger().info("%s: %s after %d trials: %s", method, "reached" if reached else "not reached", len(trials),
                          out["best"])
    return out


if __name__ == "__main__":
    main(calibrate_flow, check=config)
