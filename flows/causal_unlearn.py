"""DVC stage `causal_unlearn@<method>`: unlearn D_f from the fine-tuned causal LM with one method, save the result."""
from __future__ import annotations

from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, NEIGHBOURS, UNLEARNED, main
from lib.core.io import write_json
from lib.core.params import Count, Natural, load_params
from lib.core.statistics import NeuronsConfig
from lib.methods import check_track, get, make_config
from tasks import load_model_task, save_model_task, use_compute
from tasks.causal_inputs import causal_inputs
from tasks.unlearn import unlearn_task


def runs(method: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [get(method).__name__]


def config(method: str, params_file: str) -> dict[str, Any]:
    """The stage's params, the method's Config built (a bad value fails before any work)."""
    check_track(method, "causal.pipeline", "causal")  # an unknown name lists the registered methods
    params = load_params(params_file)
    section = params.get(f"causal.methods.{method}")
    return {"seed": params.get("seed", Natural), "max_len": params.get("causal.data.max_len", Count),
            "batch_size": params.get("causal.memorized.batch_size", Count),
            "retain_samples": params.get("causal.retain_samples", Count), "section": section,
            "neurons": params.get("causal.neurons", NeuronsConfig),
            "method": make_config(method, section, where=f"causal.methods.{method}")}


@flow(name="causal-unlearn")
def unlearn_flow(method: str, params_file: str = "params.yaml") -> dict:
    """Unlearn D_f from the fine-tuned model with one method and save the edited model."""
    use_compute(params_file)
    cfg = config(method, params_file)
    model, tokenizer = load_model_task(str(CAUSAL_FINETUNED), "causal")
    torch.manual_seed(cfg["seed"])
    inputs = causal_inputs(model, tokenizer, cfg, tuple(get(method).needs), CAUSAL_CORPUS, CAUSAL_MEMORIZED,
                           NEIGHBOURS, CAUSAL_FINETUNED)
    outcome = unlearn_task(method, "D_f", model, inputs, cfg["method"], k_max=cfg["neurons"].k_max)
    seconds = outcome.seconds
    save_model_task(model, tokenizer, UNLEARNED / method)
    report = outcome.report
    out = {"method": method, "reached": report.reached, "strength": report.strength,
           "strength_name": report.strength_name, "steps": report.steps, "trainable": report.trainable,
           "changed": outcome.changed, "total": outcome.total, "details": report.details,
           "seconds": round(seconds, 2), "config": cfg["section"]}
    write_json(UNLEARNED / method / "report.json", out)
    get_run_logger().info("%s: reached=%s %s=%s in %.1f s, %d of %d parameters changed", method, report.reached,
                          report.strength_name, report.strength, seconds, outcome.changed, outcome.total)
    return out


if __name__ == "__main__":
    main(unlearn_flow, check=config)
