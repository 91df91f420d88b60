"""DVC stage `evaluate@<method>`: utility and privacy before/after, to DVC metrics and MLflow."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lib.masking
import lib.privacy
from prefect import flow, get_run_logger
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from flows.bag import CORPUS, MODEL, memorized_records
from flows.cli import params_path, run_stage
from lib.data.corpus import read_documents
from lib.data.records import SecretRecord
from lib.gap import forget_gap
from lib.io import file_digest, json_digest, read_json, write_json
from lib.methods import get_method
from lib.params import Params, load_params, section
from tasks.common import code_digest, make_token, set_threads
from tasks.models import load_model_task
from tasks.scoring import perplexity_task, score_records_task
from tasks.tracking import log_run_task

EDITED = Path("data/edited")
RETRAINED = Path("data/models/retrained")
METRICS = Path("metrics/methods")
PRIVACY_METRIC = {"TEL": "exposure", "NAME": "mrr", "RANDOM": "random_ppl"}


def model_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, digest: str,
                 records: list[SecretRecord], params: Params) -> tuple[float, list[float]]:
    """Validation PPL and each record's privacy score, both cached by the model's content digest."""
    code, ev = code_digest(lib.privacy, lib.masking), params.evaluate
    texts = [d.text for d in read_documents(CORPUS / "valid.jsonl")][: ev.max_valid_texts]
    ppl = perplexity_task(model, tokenizer, texts, ev.valid_mask_prob, ev.valid_seed, ev.batch_size,
                          cache_token=make_token(model=digest, texts=json_digest(texts), mask=ev.valid_mask_prob,
                                                 seed=ev.valid_seed, code=code))
    scores = score_records_task(model, tokenizer, records, params.memorized.max_len, ev.batch_size,
                                cache_token=make_token(model=digest, records=json_digest([r.to_dict() for r in records]),
                                                       max_len=params.memorized.max_len, code=code))
    return ppl, scores


def model_metrics(path: Path, category: str, params: Params) -> dict[str, Any]:
    """Validation PPL, the category's privacy metric (mean over its memorized set) and per-secret scores."""
    model, tokenizer = load_model_task(str(path))
    records = memorized_records(category)
    ppl, scores = model_scores(model, tokenizer, file_digest(path), records, params)
    return {"valid_ppl": ppl, "privacy": sum(scores) / len(scores), "n_memorized": float(len(records)),
            "scores": dict(zip([r.id for r in records], scores))}


def per_secret(before: dict[str, float], after: dict[str, float], allow_text: bool, category: str) -> list[dict]:
    """Each memorized secret's score before and after; its text only when params allow it."""
    texts = {r.id: r.text for r in memorized_records(category)} if allow_text else {}
    return [{"id": i, "text": texts.get(i, "[redacted]"), "before": before[i], "after": after[i]} for i in before]


def category_row(method: str, category: str, params: Params) -> tuple[list[dict], dict[str, float]]:
    """Per-secret scores, and before/after metrics, time and edit size of one method on one category."""
    before = model_metrics(MODEL, category, params)  # cached across methods by content
    after = model_metrics(EDITED / method / category, category, params)
    retrain = model_metrics(RETRAINED, category, params)  # the exact-unlearning target
    report = read_json(EDITED / method / category / "edit_report.json")
    name = PRIVACY_METRIC[category]
    seconds = report["selection_seconds"] + report["edit_seconds"] + report["upstream_seconds"]
    details = per_secret(before["scores"], after["scores"], params.evaluate.log_private_text, category)
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
    set_threads()
    get_method(method)
    params = load_params(params_file)
    params_hash = json_digest(section(params, "methods"))[:12]
    rows = {}
    for cat in params.pipeline.categories:
        details, rows[cat] = category_row(method, cat, params)
        flat = {f"method.{k}": v for k, v in section(params, f"methods.{method}").items()}
        log_run_task(params.mlflow, f"{method}-{cat}",
                     tags={"method": method, "category": cat, "stage": "evaluate", "params_hash": params_hash,
                           "privacy_metric": PRIVACY_METRIC[cat]},
                     params={**flat, "category": cat, "model": params.finetune.model},
                     metrics=shared_metrics(rows[cat], cat), artifacts={"per_secret.json": details})
        get_run_logger().info("%s %s: %s", method, cat, {k: round(v, 4) for k, v in rows[cat].items()})
    write_json(METRICS / f"{method}.json", rows)
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m flows.evaluate <method>", file=sys.stderr)
        sys.exit(2)
    run_stage(evaluate_flow, sys.argv[1], params_path(), check=lambda: get_method(sys.argv[1]))
