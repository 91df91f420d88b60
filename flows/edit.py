"""DVC stage `edit@<method>`: apply one registered method per category (data/edited/<method>/)."""
from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger

from flows.bag import MODEL
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
OUT = Path("data/edited")


def _seconds(path: Path) -> float:
    """Compute time stored in a neuron-stage output's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return float(handle.metadata().get("seconds", 0.0))


def method_inputs(category: str, seed: int) -> tuple[MethodInputs, float]:
    """Everything upstream computed for a category, and the time it took."""
    files = [ATTRIBUTION / f"{category}.safetensors", ACTIVATIONS / f"{category}.safetensors",
             CLUSTERS / f"{category}.safetensors"]
    labels = load_tensors(files[2])["labels"].numpy()
    inputs = MethodInputs(category=category, attribution=load_tensors(files[0])["attribution"],
                          activations=load_tensors(files[1])["activations"],
                          cluster_labels={layer: labels[layer] for layer in range(labels.shape[0])}, seed=seed)
    return inputs, _seconds(files[0]) + _seconds(files[2])


@flow(name="edit")
def edit_flow(method: str, params_file: str = "params.yaml") -> dict:
    """Edit a fresh copy of the fine-tuned model per category and save each as a checkpoint."""
    set_threads()
    get_method(method)  # unknown method: fail before any work
    params = load_params(params_file)
    reports = {}
    for cat in params.pipeline.categories:
        model, tokenizer = load_model_task(str(MODEL))
        inputs, upstream = method_inputs(cat, params.seed)
        report = edit_task(model, method, section(params, f"methods.{method}"), inputs)
        report["upstream_seconds"] = upstream if method == "snku" else 0.0  # attribution + clustering are SNKU's
        with atomic_dir(OUT / method / cat) as tmp:
            save_model(model, tokenizer, tmp)
            write_json(tmp / "edit_report.json", report)
        reports[cat] = report
        get_run_logger().info("%s %s: %d neurons edited", method, cat, len(report["neurons"]))
    return reports


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m flows.edit <method>", file=sys.stderr)
        sys.exit(2)
    run_stage(edit_flow, sys.argv[1], params_path())
