"""DVC stage `memorized`: score every planted secret and control; keep the memorized ones."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CORPUS, FINETUNED, MASKED_METRICS, MEMORIZED, main
from lib.core.io import file_digest, write_json
from lib.core.params import load_params
from lib.data.records import PipelineConfig, read_secrets
from lib.families.memorized import MemorizedConfig, memorization_report, require_memorized
from tasks import load_model_task, use_compute
from tasks.scoring import record_scores


def config(params_file: str) -> tuple[MemorizedConfig, PipelineConfig]:
    """The stage's params: sections `memorized` and `pipeline`."""
    params = load_params(params_file)
    return params.get("memorized", MemorizedConfig), params.get("pipeline", PipelineConfig)


@flow(name="memorized")
def memorized_flow(params_file: str = "params.yaml") -> dict:
    """Score secrets and controls, resolve thresholds, write the memorized subsets."""
    use_compute(params_file)
    cfg, pipeline = config(params_file)
    secrets, controls = read_secrets(CORPUS / "secrets.jsonl"), read_secrets(CORPUS / "controls.jsonl")
    model, tokenizer = load_model_task(str(FINETUNED), "masked")
    digest = file_digest(FINETUNED)
    secret_scores = record_scores(model, tokenizer, digest, secrets, cfg.max_len, cfg.batch_size)
    control_scores = record_scores(model, tokenizer, digest, controls, cfg.max_len, cfg.batch_size)
    report = memorization_report(secrets, secret_scores, controls, control_scores, cfg.thresholds,
                                 cfg.control_quantile)
    require_memorized(report, pipeline.categories)
    summary = report.to_dict()
    write_json(MEMORIZED / "memorized.json", {cat: list(report.memorized_ids(cat)) for cat in report.categories})
    write_json(MEMORIZED / "scores.json", {"secrets": dict(zip([s.id for s in secrets], secret_scores)),
                                           "controls": dict(zip([c.id for c in controls], control_scores))})
    write_json(MASKED_METRICS["memorized"], summary)
    for cat, entry in report.categories.items():
        get_run_logger().info("%s: %d/%d memorized (threshold %.3g, controls passing %.1f%%)", cat, entry.n_memorized,
                              entry.n_secrets, entry.threshold, 100 * (entry.control_pass_rate or 0.0))
    return summary


if __name__ == "__main__":
    main(memorized_flow, check=config)
