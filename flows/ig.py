"""DVC stage `ig`: DEPN's Integrated Gradients of every memorized secret token, one cached task per secret."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CORPUS, FINETUNED, MEMORIZED, STATS, main
from lib.core.ig import IGConfig
from lib.core.io import file_digest, save_tensors
from lib.core.params import Count, load_params
from lib.data.records import PipelineConfig, memorized_records
from lib.families.masked import secret_token_rows
from tasks import load_model_task, shared, use_compute
from tasks.ig import ig_stats


def config(params_file: str) -> tuple[IGConfig, int, PipelineConfig]:
    """The stage's params: `ig`, `memorized.max_len` and `pipeline`."""
    params = load_params(params_file)
    return params.get("ig", IGConfig), params.get("memorized.max_len", Count), params.get("pipeline", PipelineConfig)


@flow(name="ig")
def ig_flow(params_file: str = "params.yaml") -> None:
    """Integrated Gradients (R, L, d_ff) of every memorized secret token, one cached task per secret."""
    use_compute(params_file)
    cfg, max_len, pipeline = config(params_file)
    model, tokenizer = load_model_task(str(FINETUNED), "masked")
    ref = shared(model, FINETUNED, "masked", file_digest(FINETUNED))
    for cat in pipeline.categories:
        records = memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", cat)
        rows = secret_token_rows(tokenizer, records, max_len)
        scores, seconds = ig_stats(ref, rows, rows.record_index, cfg, cat)
        save_tensors(STATS["ig"] / f"{cat}.safetensors", {"ig": scores, "record_index": rows.record_index},
                     meta={"seconds": f"{seconds:.6f}"})
        get_run_logger().info("ig %s: %d rows, %.1f s of compute", cat, len(rows), seconds)


if __name__ == "__main__":
    main(ig_flow, check=config)
