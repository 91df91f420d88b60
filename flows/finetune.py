"""DVC stage `finetune`: masked-LM fine-tuning on the corpus (data/models/finetuned/)."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import params_path, run_stage
from lib.data.corpus import read_documents
from lib.io import write_json
from lib.params import load_params
from tasks.common import set_threads
from tasks.finetune import train_task
from tasks.models import load_model_task, save_model_task

CORPUS = Path("data/corpus")
OUT = Path("data/models/finetuned")
METRICS = Path("metrics/finetune.json")


@flow(name="finetune")
def finetune_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune the configured masked LM on the training emails and save it."""
    set_threads()
    params = load_params(params_file).finetune
    texts = [doc.text for doc in read_documents(CORPUS / "train.jsonl")]
    model, tokenizer = load_model_task(params.model, params.seed)
    log = train_task(model, tokenizer, texts, params)
    save_model_task(model, tokenizer, OUT)
    metrics = {"steps": log.steps, "final_loss": log.final_loss, "seconds": round(log.seconds, 1),
               "epoch_losses": [round(x, 4) for x in log.epoch_losses]}
    write_json(METRICS, metrics)
    get_run_logger().info("fine-tuned %s: %d steps, final loss %.3f", params.model, log.steps, log.final_loss)
    return metrics


if __name__ == "__main__":
    run_stage(finetune_flow, params_path())
