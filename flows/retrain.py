"""DVC stage `retrain`: the exact-unlearning reference, fine-tuned without the forget samples."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CORPUS, MASKED_METRICS, MEMORIZED, RETRAINED, main
from lib.core.finetune import FinetuneConfig
from lib.core.io import write_json
from lib.core.models import check_model_folder
from lib.core.params import load_params
from lib.data.forget import remove_samples
from lib.data.records import PipelineConfig, memorized_records, read_documents
from tasks.parallel import TrainingSet
from tasks import load_model_task, save_model_task, use_compute
from tasks.finetune import train_task


def config(params_file: str) -> tuple[FinetuneConfig, PipelineConfig]:
    """The stage's params: sections `finetune` and `pipeline`."""
    params = load_params(params_file)
    return params.get("finetune", FinetuneConfig), params.get("pipeline", PipelineConfig)


def check(params_file: str) -> tuple[FinetuneConfig, PipelineConfig]:
    """The params, and a local model folder's config and weights: a bad folder stops the stage before its flow run."""
    cfg, pipeline = config(params_file)
    check_model_folder(cfg.model)
    return cfg, pipeline


@flow(name="retrain")
def retrain_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune exactly as the `finetune` stage, on the corpus minus every memorized secret's samples."""
    use_compute(params_file)
    cfg, pipeline = config(params_file)
    records = [r for cat in pipeline.categories
               for r in memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", cat)]
    docs, removal = remove_samples(read_documents(CORPUS / "train.jsonl"), records)
    model, tokenizer = load_model_task(cfg.model, "masked", cfg.seed, float32=True)
    log = train_task(model, tokenizer, TrainingSet.masked([d.text for d in docs]), cfg, desc="masked-lm")
    save_model_task(model, tokenizer, RETRAINED)
    metrics = {"forgotten_secrets": len(records), "samples_removed": sum(removal.occurrences.values()),
               "documents_changed": removal.documents_changed, "documents": len(docs), "steps": log.steps,
               "final_loss": log.final_loss, "seconds": round(log.seconds, 1), "ranks": log.ranks}
    write_json(MASKED_METRICS["retrain"], metrics)
    get_run_logger().info("retrained without %d samples of %d secrets: %d steps",
                          metrics["samples_removed"], len(records), log.steps)
    return metrics


if __name__ == "__main__":
    main(retrain_flow, check=check)
