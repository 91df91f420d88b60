"""DVC stage `edit@<method>`: one registered method per category on the fine-tuned masked LM (data/edited/<method>/)."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import CORPUS, EDITED, FINETUNED, MEMORIZED, STATS, main
from lib.core.io import atomic_dir, write_json
from lib.core.models import save_model
from lib.core.params import Count, Natural, load_params
from lib.data.records import PipelineConfig, memorized_records
from lib.families.masked_retain import RetainConfig
from lib.methods import check_track, get, make_config
from tasks import load_model_task, use_compute
from tasks.edit import masked_inputs, masked_retain
from tasks.unlearn import unlearn_task


def runs(method: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [get(method).__name__]


def config(method: str, params_file: str) -> dict[str, Any]:
    """The stage's params, each category's method Config built (so a bad value fails before any work)."""
    check_track(method, "pipeline.methods", "masked")  # an unknown name lists the methods
    params = load_params(params_file)
    pipeline = params.get("pipeline", PipelineConfig)
    section = params.get(f"methods.{method}")
    return {"seed": params.get("seed", Natural), "max_len": params.get("memorized.max_len", Count),
            "batch_size": params.get("memorized.batch_size", Count),
            "pipeline": pipeline, "configs": {c: make_config(method, section, c) for c in pipeline.categories},
            "retain": params.get("retain", RetainConfig)}


@flow(name="edit")
def edit_flow(method: str, params_file: str = "params.yaml") -> dict:
    """Edit a fresh copy of the fine-tuned model per category and save each as a checkpoint."""
    use_compute(params_file)
    cfg = config(method, params_file)
    reports = {}
    # one atomic folder for all categories: a category failing late must not leave a mix of old and new edits
    with atomic_dir(EDITED / method) as out:
        needs, retain = tuple(get(method).needs), None
        for cat, method_cfg in cfg["configs"].items():
            model, tokenizer = load_model_task(str(FINETUNED), "masked")
            if retain is None and "retain" in needs:  # the same rows for every category: built once
                retain = masked_retain(tokenizer, CORPUS, cfg["retain"], cfg["max_len"])
            records = memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", cat)
            inputs = masked_inputs(tokenizer, records, STATS, cat, cfg["max_len"], cfg["batch_size"], cfg["seed"],
                                   needs, retain)
            outcome = unlearn_task(method, cat, model, inputs, method_cfg)
            report = outcome.report
            upstream = sum(inputs.stats.seconds.get(n, 0.0) for n in needs)
            save_model(model, tokenizer, out / cat)
            reports[cat] = {"method": method, "category": cat, "neurons": [list(n) for n in report.neurons],
                            "strength": report.strength, "strength_name": report.strength_name,
                            "selection_seconds": report.selection_seconds, "edit_seconds": report.edit_seconds,
                            "upstream_seconds": upstream, "changed": outcome.changed, "total": outcome.total,
                            "fraction_weights_edited": outcome.changed / outcome.total, "details": report.details}
            write_json(out / cat / "edit_report.json", reports[cat])
            edited = (f"{len(report.neurons)} neurons edited" if get(method).kind == "neurons"
                      else f"{outcome.changed / outcome.total:.2%} of the weights changed")  # a weight-space method
            get_run_logger().info("%s %s: %s", method, cat, edited)
    return reports


if __name__ == "__main__":
    main(edit_flow, check=config)
