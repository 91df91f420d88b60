"""DVC stage `activations`: FFN activations (N, L, d_ff) of each category's memorized bag, one cached task per shard."""
from __future__ import annotations

import torch
from prefect import flow, get_run_logger

from flows import CORPUS, FINETUNED, MEMORIZED, STATS, main
from lib.core.attribution import AttributionConfig
from lib.core.io import file_digest, save_tensors
from lib.core.params import Count, load_params
from lib.data.records import PipelineConfig, memorized_records
from lib.families.masked import secret_token_rows
from tasks import load_model_task, shared, use_compute
from tasks.neurons import activations_shard_task, shard_stats


def config(params_file: str) -> tuple[AttributionConfig, int, PipelineConfig]:
    """The stage's params: `attribution`, `memorized.max_len` and `pipeline`."""
    params = load_params(params_file)
    return (params.get("attribution", AttributionConfig), params.get("memorized.max_len", Count),
            params.get("pipeline", PipelineConfig))


@flow(name="activations")
def activations_flow(params_file: str = "params.yaml") -> None:
    """Cache FFN activations (N, L, d_ff) at the masked position of every memorized secret token."""
    use_compute(params_file)
    attribution, max_len, pipeline = config(params_file)
    model, tokenizer = load_model_task(str(FINETUNED), "masked")
    ref = shared(model, FINETUNED, "masked", file_digest(FINETUNED))
    for cat in pipeline.categories:
        records = memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", cat)
        rows = secret_token_rows(tokenizer, records, max_len)
        parts, seconds = shard_stats("activations", activations_shard_task, ref, rows,
                                     attribution.shard_size, cat)
        save_tensors(STATS["activations"] / f"{cat}.safetensors", {"activations": torch.cat(parts)},
                     meta={"seconds": f"{seconds:.6f}"})
        get_run_logger().info("activations %s: %d shards, %.1f s of compute", cat, len(parts), seconds)


if __name__ == "__main__":
    main(activations_flow, check=config)
