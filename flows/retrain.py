"""DVC stage `retrain`: the exact-unlearning reference, fine-tuned without the forget samples."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.bag import CORPUS, memorized_records
from flows.cli import params_path, run_stage
from lib.data.corpus import read_documents
from lib.data.forget import remove_samples
from lib.io import write_json
from lib.params import load_params
from tasks.common import set_threads
from tasks.finetune import train_task
from tasks.models import load_model_task, save_model_task

OUT = Path("data/models/retrained")
METRICS = Path("metrics/retrain.json")


@flow(name="retrain")
def retrain_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune exactly as the `finetune` stage, on the corpus minus every memorized secret's samples."""
    set_threads()
    params = load_params(params_file)
    records = [r for cat in params.pipeline.categories for r in memorized_records(cat)]
    docs, removal = remove_samples(read_documents(CORPUS / "train.jsonl"), records)
    model, tokenizer = load_model_task(params.finetune.model, params.finetune.seed)
    log = train_task(model, tokenizer, [d.text for d in docs], params.finetune)
    save_model_task(model, tokenizer, OUT)
    metrics = {"forgotten_secrets": len(records), "samples_removed": sum(removal.occurrences.values()),
               "documents_changed": removal.documents_changed, "documents": len(docs), "steps": log.steps,
               "final_loss": log.final_loss, "seconds": round(log.seconds, 1)}
    write_json(METRICS, metrics)
    get_run_logger().info("retrained without %d samples of %d secrets: %d steps",
                          metrics["samples_removed"], len(records), log.steps)
    return metrics


if __name__ == "__main__":
    run_stage(retrain_flow, params_path())
