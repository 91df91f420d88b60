"""DVC stage `memorized`: score every planted secret and control; keep the memorized ones."""
from __future__ import annotations

from pathlib import Path

import lib.masking
import lib.privacy
from prefect import flow, get_run_logger

from flows.cli import params_path, run_stage
from lib.data.corpus import read_secrets
from lib.io import file_digest, json_digest, write_json
from lib.memorized import memorization_report, require_memorized
from lib.params import load_params
from tasks.common import code_digest, make_token, set_threads
from tasks.models import load_model_task
from tasks.scoring import score_records_task

CORPUS = Path("data/corpus")
MODEL = Path("data/models/finetuned")
OUT = Path("data/memorized")
METRICS = Path("metrics/memorized.json")


def score(model, tokenizer, records, params, model_digest: str) -> list[float]:
    """Score records through the content-cached task."""
    token = make_token(model=model_digest, records=json_digest([r.to_dict() for r in records]),
                       max_len=params.max_len, code=code_digest(lib.privacy, lib.masking))
    return score_records_task(model, tokenizer, records, params.max_len, params.batch_size, cache_token=token)


@flow(name="memorized")
def memorized_flow(params_file: str = "params.yaml") -> dict:
    """Score secrets and controls, resolve thresholds, write the memorized subsets."""
    set_threads()
    params = load_params(params_file)
    secrets, controls = read_secrets(CORPUS / "secrets.jsonl"), read_secrets(CORPUS / "controls.jsonl")
    model, tokenizer = load_model_task(str(MODEL))
    digest = file_digest(MODEL)
    secret_scores = score(model, tokenizer, secrets, params.memorized, digest)
    control_scores = score(model, tokenizer, controls, params.memorized, digest)
    report = memorization_report(secrets, secret_scores, controls, control_scores,
                                 params.memorized.thresholds, params.memorized.control_quantile)
    require_memorized(report, params.pipeline.categories)
    summary = report.to_dict()
    write_json(OUT / "memorized.json", {cat: list(report.memorized_ids(cat)) for cat in report.categories})
    write_json(OUT / "scores.json", {"secrets": dict(zip([s.id for s in secrets], secret_scores)),
                                     "controls": dict(zip([c.id for c in controls], control_scores))})
    write_json(METRICS, summary)
    for cat, entry in report.categories.items():
        get_run_logger().info("%s: %d/%d memorized (threshold %.3g, controls passing %.1f%%)", cat, entry.n_memorized,
                              entry.n_secrets, entry.threshold, 100 * (entry.control_pass_rate or 0.0))
    return summary


if __name__ == "__main__":
    run_stage(memorized_flow, params_path())
