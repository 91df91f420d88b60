"""DVC stage `attribution`: Grad x Act attribution (L, d_ff) of each category's memorized bag (SNKU Eq. 2-4)."""
from __future__ import annotations

import torch
from prefect import flow, get_run_logger

from flows import CORPUS, FINETUNED, MEMORIZED, STATS, main
from lib.core.attribution import AttributionConfig
from lib.core.io import file_digest, save_tensors
from lib.core.params import Count, load_params
from lib.data.records import PipelineConfig, memorized_records
from lib.families.masked import secret_token_rows
from tasks import compute_record, load_model_task, shared, use_compute
from tasks.neurons import attribution_shard_task, shard_stats


def config(params_file: str) -> tuple[AttributionConfig, int, PipelineConfig]:
    """The stage's params: `attribution`, `memorized.max_len` and `pipeline`."""
    params = load_params(params_file)
    return (params.get("attribution", AttributionConfig), params.get("memorized.max_len", Count),
            params.get("pipeline", PipelineConfig))


@flow(name="attribution")
def attribution_flow(params_file: str = "params.yaml") -> None:
    """Gradient x activation of the gold-token logit, summed over the bag: one cached task per shard."""
    use_compute(params_file)
    attribution, max_len, pipeline = config(params_file)
    model, tokenizer = load_model_task(str(FINETUNED), "masked")
    ref = shared(model, FINETUNED, "masked", file_digest(FINETUNED))
    for cat in pipeline.categories:
        records = memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", cat)
        rows = secret_token_rows(tokenizer, records, max_len)
        parts, seconds = shard_stats("attribution", attribution_shard_task, ref, rows,
                                     attribution.shard_size, cat)
        save_tensors(STATS["attribution"] / f"{cat}.safetensors", {"attribution": torch.stack(parts).sum(0)},
                     meta={"seconds": f"{seconds:.6f}", **{k: str(v) for k, v in compute_record(model).items()}})
        get_run_logger().info("attribution %s: %d shards, %.1f s of compute", cat, len(parts), seconds)


if __name__ == "__main__":
    main(attribution_flow, check=config)
