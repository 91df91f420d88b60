"""DVC stage `finetune`: masked-LM fine-tuning on the corpus (data/models/finetuned/)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CORPUS, FINETUNED, MASKED_METRICS, main
from lib.core.finetune import FinetuneConfig
from lib.core.io import write_json
from lib.core.models import check_model_folder
from lib.core.params import load_params
from lib.data.records import read_documents
from tasks.parallel import TrainingSet
from tasks import compute_record, load_model_task, save_model_task, use_compute
from tasks.finetune import train_task


def config(params_file: str) -> FinetuneConfig:
    """The stage's params: section `finetune`."""
    return load_params(params_file).get("finetune", FinetuneConfig)


def check(params_file: str) -> FinetuneConfig:
    """The params, and a local model folder's config and weights: a bad folder stops the stage before its flow run."""
    cfg = config(params_file)
    check_model_folder(cfg.model)
    return cfg


@flow(name="finetune")
def finetune_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune the configured masked LM on the training emails and save it."""
    use_compute(params_file)
    cfg = config(params_file)
    texts = [doc.text for doc in read_documents(CORPUS / "train.jsonl")]
    model, tokenizer = load_model_task(cfg.model, "masked", cfg.seed, float32=True)
    log = train_task(model, tokenizer, TrainingSet.masked(texts), cfg, desc="masked-lm")
    save_model_task(model, tokenizer, FINETUNED)
    metrics = {"steps": log.steps, "final_loss": log.final_loss, "seconds": round(log.seconds, 1), "ranks": log.ranks,
               "epoch_losses": [round(x, 4) for x in log.epoch_losses], "compute": compute_record(model)}
    write_json(MASKED_METRICS["finetune"], metrics)
    get_run_logger().info("fine-tuned %s: %d steps, final loss %.3f", cfg.model, log.steps, log.final_loss)
    return metrics


if __name__ == "__main__":
    main(finetune_flow, check=check)
