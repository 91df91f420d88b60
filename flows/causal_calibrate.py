"""DVC stage `causal_calibrate@<method>`: the causal track's methods compared at equal forgetting (lib.core.
calibration, as the masked track's `calibrate@<method>`).

A seeded Optuna search over the method's strength fields (`causal.calibration.spaces.<method>`) for the lowest
held-out perplexity whose forget gap, the distance of D_f's MA to the retrained model's, is at most
`causal.calibration.target` times the fine-tuned model's. A trial is the method at those values on a copy of the
fine-tuned model without the Eq. 17 stop rule (lib.families.causal_trial), content-cached by Prefect
(tasks.causal_runs), and an MLflow child run of the search's run (tags stage = calibrate, category = causal:
the saved view "Methods at equal forgetting" lists both tracks' searches)."""
from __future__ import annotations

from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import (CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, CAUSAL_METRICS, CAUSAL_RETRAINED, METRICS,
                   NEIGHBOURS, main)
from lib.core.calibration import CalibrationConfig, check_space, study_record
from lib.core.io import file_digest, read_jsonl, write_json
from lib.core.params import Count, Natural, NonEmpty, ParamsError, load_params
from lib.core.statistics import NeuronsConfig
from lib.families.causal import encode_all
from lib.methods import check_track, get, make_config
from tasks import load_model_task, use_compute
from tasks.causal_inputs import causal_inputs, require_reference
from tasks.causal_runs import calibrate
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
    valid = encode_all(tokenizer, held, cfg["max_len"])
    reference = load_model_task(str(CAUSAL_RETRAINED), "causal")[0]
    out = calibrate(model, reference, method, cfg["section"], inputs, valid, cfg["batch_size"], cal,
                    file_digest(CAUSAL_FINETUNED / "model.safetensors"))
    write_json(CALIBRATION / f"{method}.json", out)
    if out["reached"] is None:  # nothing to forget: no search ran
        return out
    log_study(cfg, method, out)
    get_run_logger().info("%s: %s after %d trials: %s", method, "reached" if out["reached"] else "not reached",
                          len(out["trials"]), out["best"])
    return out


if __name__ == "__main__":
    main(calibrate_flow, check=config)
