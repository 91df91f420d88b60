"""DVC stage `evaluate@<method>`: utility and privacy before/after, to DVC metrics and MLflow."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows import CORPUS, EDITED, FINETUNED, MASKED_METRICS, MEMORIZED, RETRAINED, main
from lib.core.io import file_digest, read_json, write_json
from lib.core.metrics import forget_gap
from lib.core.params import Count, NonEmpty, load_params
from lib.data.records import PipelineConfig, SecretRecord, memorized_records, read_documents
from lib.families.masked import PRIVACY_METRIC, EvaluateConfig
from tasks import load_model_task, use_compute
from tasks.scoring import model_scores
from tasks.tracking import MlflowConfig, log_run_task


def config(method: str, params_file: str) -> dict[str, Any]:
    """The stage's params: `evaluate`, `memorized` (max_len), `pipeline`, `mlflow`, `finetune.model`, the method's."""
    params = load_params(params_file)
    return {"evaluate": params.get("evaluate", EvaluateConfig), "max_len": params.get("memorized.max_len", Count),
            "pipeline": params.get("pipeline", PipelineConfig), "mlflow": params.get("mlflow", MlflowConfig),
            "model": params.get("finetune.model", NonEmpty), "method": params.get(f"methods.{method}"),
            "params_hash": params.fingerprint("evaluate", "memorized.max_len", "pipeline.categories", "finetune.model",
                                              f"methods.{method}")}


def records_of(category: str) -> list[SecretRecord]:
    """The category's memorized secrets."""
    return memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", category)


def model_metrics(path: Path, category: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Validation PPL, the category's privacy metric (mean over its memorized set) and per-secret scores."""
    model, tokenizer = load_model_task(str(path), "masked")
    records, ev = records_of(category), cfg["evaluate"]
    texts = [d.text for d in read_documents(CORPUS / "valid.jsonl")][: ev.max_valid_texts]
    ppl, scores = model_scores(model, tokenizer, file_digest(path), records, texts, ev, cfg["max_len"])
    return {"valid_ppl": ppl, "privacy": sum(scores) / len(scores), "n_memorized": float(len(records)),
            "scores": dict(zip([r.id for r in records], scores))}


def per_secret(before: dict[str, float], after: dict[str, float], allow_text: bool, category: str) -> list[dict]:
    """Each memorized secret's score before and after; its text only when params allow it."""
    texts = {r.id: r.text for r in records_of(category)} if allow_text else {}
    return [{"id": i, "text": texts.get(i, "[redacted]"), "before": before[i], "after": after[i]} for i in before]


def category_row(method: str, category: str, cfg: dict[str, Any]) -> tuple[list[dict], dict[str, float]]:
    """Per-secret scores, and before/after metrics, time and edit size of one method on one category."""
    before = model_metrics(FINETUNED, category, cfg)  # cached across methods by content
    after = model_metrics(EDITED / method / category, category, cfg)
    retrain = model_metrics(RETRAINED, category, cfg)  # the exact-unlearning target
    report = read_json(EDITED / method / category / "edit_report.json")
    name = PRIVACY_METRIC[category]
    seconds = report["selection_seconds"] + report["edit_seconds"] + report["upstream_seconds"]
    details = per_secret(before["scores"], after["scores"], cfg["evaluate"].log_private_text, category)
    return details, {"valid_ppl_before": before["valid_ppl"], "valid_ppl": after["valid_ppl"],
                     f"{name}_before": before["privacy"], name: after["privacy"],
                     "privacy_before": before["privacy"], "privacy": after["privacy"],
                     "time_s": seconds, "neurons_edited": float(len(report["neurons"])),
                     "weights_edited_frac": report["fraction_weights_edited"], "n_memorized": before["n_memorized"],
                     "retrain_privacy": retrain["privacy"], "retrain_valid_ppl": retrain["valid_ppl"],
                     "forget_gap": forget_gap(name, after["privacy"], retrain["privacy"])}


def shared_metrics(row: dict[str, float], category: str) -> dict[str, float]:
    """The row without its category-named privacy aliases: every MLflow run has the same metric names."""
    alias = PRIVACY_METRIC[category]  # still in the tag privacy_metric, and in the DVC metrics file
    return {k: v for k, v in row.items() if k not in (alias, f"{alias}_before")}


@flow(name="evaluate")
def evaluate_flow(method: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Evaluate every category's edited model against the fine-tuned one; log to MLflow."""
    use_compute(params_file)
    cfg = config(method, params_file)
    rows = {}
    for cat in cfg["pipeline"].categories:
        details, rows[cat] = category_row(method, cat, cfg)
        flat = {f"method.{k}": v for k, v in (cfg["method"] or {}).items()}
        log_run_task(cfg["mlflow"], f"{method}-{cat}",
                     tags={"method": method, "category": cat, "stage": "evaluate", "params_hash": cfg["params_hash"],
                           "privacy_metric": PRIVACY_METRIC[cat]},
                     params={**flat, "category": cat, "model": cfg["model"]},
                     metrics=shared_metrics(rows[cat], cat), artifacts={"per_secret.json": details})
        get_run_logger().info("%s %s: %s", method, cat, {k: round(v, 4) for k, v in rows[cat].items()})
    write_json(MASKED_METRICS["methods"] / f"{method}.json", rows)
    return rows


if __name__ == "__main__":
    main(evaluate_flow, check=config)
