"""Prefect task of the ig stage: Integrated Gradients of every FFN neuron, one cached task per secret."""
from __future__ import annotations

import torch
from prefect import task
from transformers import PreTrainedModel

import lib.core.ig
from lib.core.adapter import FFNAdapter
from lib.core.ig import IGConfig, integrated_gradients
from lib.families.masked import MaskedRows, iter_chunks, take
from tasks import cached_task_options, code_digest, make_token
from tasks.neurons import rows_token, run_cached, timed_store


@task(name="ig-shard", task_run_name="ig-{label}", **cached_task_options())
def ig_shard_task(model: PreTrainedModel, rows: MaskedRows, cfg: IGConfig, label: str, cache_token: str) -> str:
    """Integrated Gradients (B, L, d_ff) of every FFN neuron at each row's masked position."""
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: integrated_gradients(model, adapter, rows, cfg))


def by_record(rows: MaskedRows) -> list[MaskedRows]:
    """The rows of each record, in order: IG is cached per secret, so any subset of secrets reuses it."""
    # each record trimmed to its own length: the cache key must not depend on the other records' padding
    return [next(iter_chunks(take(rows, (rows.record_index == r).nonzero().flatten()), len(rows)))
            for r in rows.record_index.unique().tolist()]


def ig_stats(model: PreTrainedModel, model_digest: str, rows: MaskedRows, cfg: IGConfig,
             label: str) -> tuple[torch.Tensor, float]:
    """IG (R, L, d_ff) of `rows` in their order, one cached task per record, and its compute seconds."""
    code, seconds = code_digest(lib.core.ig), 0.0
    parts: dict[int, torch.Tensor] = {}
    for shard in by_record(rows):
        record = int(shard.record_index[0])
        token = make_token(kind="ig", model=model_digest, rows=rows_token(shard), cfg=repr(cfg), code=code)
        parts[record], spent = run_cached(ig_shard_task, model, shard, cfg, label=f"{label}-r{record:03d}",
                                          cache_token=token)
        seconds += spent
    # secret_token_rows lays rows out grouped by record in record order, so concatenation restores it
    return torch.cat([parts[r] for r in rows.record_index.unique().tolist()]), seconds
