"""DVC stage `edit@<method>`: apply one registered method per category (data/edited/<method>/)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from prefect import flow, get_run_logger
from transformers import PreTrainedTokenizerBase

from flows.bag import MODEL, bag_rows, memorized_records
from flows.cli import params_path, run_stage
from lib.io import atomic_dir, load_tensors, write_json
from lib.methods import get_method
from lib.methods.base import MethodInputs
from lib.models import save_model
from lib.params import load_params, section
from tasks.common import set_threads
from tasks.edit import edit_task
from tasks.models import load_model_task

ACTIVATIONS, ATTRIBUTION, CLUSTERS = Path("data/activations"), Path("data/attribution"), Path("data/clusters")
IG = Path("data/ig")
OUT = Path("data/edited")


def _seconds(path: Path) -> float:
    """Compute time stored in a neuron-stage output's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return float(handle.metadata().get("seconds", 0.0))


STAGE_DIRS = {"activations": ACTIVATIONS, "attribution": ATTRIBUTION, "clustering": CLUSTERS, "ig": IG}


def method_inputs(category: str, seed: int, tokenizer: PreTrainedTokenizerBase, max_len: int) -> MethodInputs:
    """Everything the upstream stages computed for a category, plus its memorized rows and records."""
    labels = load_tensors(CLUSTERS / f"{category}.safetensors")["labels"].numpy()  # (L, d_ff)
    ig = load_tensors(IG / f"{category}.safetensors")
    rows = bag_rows(tokenizer, category, max_len)
    if not torch.equal(ig["record_index"], rows.record_index):
        raise ValueError(f"{IG}/{category}.safetensors does not match the memorized rows; re-run the ig stage")
    return MethodInputs(category=category, attribution=load_tensors(ATTRIBUTION / f"{category}.safetensors")["attribution"],
                        activations=load_tensors(ACTIVATIONS / f"{category}.safetensors")["activations"],
                        cluster_labels={layer: labels[layer] for layer in range(labels.shape[0])}, seed=seed,
                        rows=rows, ig=ig["ig"], records=tuple(memorized_records(category)), tokenizer=tokenizer)


def upstream_seconds(method: str, category: str) -> float:
    """Compute time of the upstream stages the method counts as part of its selection."""
    return sum(_seconds(STAGE_DIRS[s] / f"{category}.safetensors") for s in get_method(method).selection_stages)


@flow(name="edit")
def edit_flow(method: str, params_file: str = "params.yaml") -> dict:
    """Edit a fresh copy of the fine-tuned model per category and save each as a checkpoint."""
    set_threads()
    get_method(method)  # unknown method: fail before any work
    params = load_params(params_file)
    reports = {}
    # one atomic folder for all categories: a category failing late must not leave a mix of old and new edits
    with atomic_dir(OUT / method) as out:
        for cat in params.pipeline.categories:
            model, tokenizer = load_model_task(str(MODEL))
            inputs = method_inputs(cat, params.seed, tokenizer, params.memorized.max_len)
            report = edit_task(model, method, section(params, f"methods.{method}"), inputs)
            report["upstream_seconds"] = upstream_seconds(method, cat)
            save_model(model, tokenizer, out / cat)
            write_json(out / cat / "edit_report.json", report)
            reports[cat] = report
            get_run_logger().info("%s %s: %d neurons edited", method, cat, len(report["neurons"]))
    return reports


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m flows.edit <method>", file=sys.stderr)
        sys.exit(2)
    run_stage(edit_flow, sys.argv[1], params_path(), check=lambda: get_method(sys.argv[1]))
