"""Prefect task of the ig stage: Integrated Gradients of every FFN neuron, one cached task per secret."""
from __future__ import annotations

import torch
from prefect import task

import lib.core.ig
from lib.core.adapter import FFNAdapter
from lib.core.ig import IGConfig, integrated_gradients
from lib.families.masked import MaskedRows, iter_chunks, take
from lib.core.models import ComputeConfig
from tasks import ModelRef, adopt, cached_task_options, code_digest, current_compute, make_token, model_of
from tasks.neurons import rows_token, run_stored, timed_store


@task(name="ig-shard", task_run_name="ig-{label}", **cached_task_options())
def ig_shard_task(ref: ModelRef, compute: ComputeConfig, rows: MaskedRows, cfg: IGConfig, label: str,
                  cache_token: str) -> str:
    """Integrated Gradients (B, L, d_ff) of every FFN neuron at each row's masked position."""
    adopt(compute)
    model = model_of(ref)
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: integrated_gradients(model, adapter, rows, cfg))


def by_record(rows: MaskedRows) -> list[MaskedRows]:
    """The rows of each record, in order: IG is cached per secret, so any subset of secrets reuses it."""
    # each record trimmed to its own length: the cache key must not depend on the other records' padding
    return [next(iter_chunks(take(rows, (rows.record_index == r).nonzero().flatten()), len(rows)))
            for r in rows.record_index.unique().tolist()]


def ig_stats(ref: ModelRef, rows: MaskedRows, cfg: IGConfig, label: str) -> tuple[torch.Tensor, float]:
    """IG (R, L, d_ff) of `rows` in their order, one cached task per record (side by side on Ray), its seconds."""
    code, records = code_digest(lib.core.ig), by_record(rows)
    calls = [{"ref": ref, "compute": current_compute(), "rows": shard, "cfg": cfg,
              "label": f"{label}-r{int(shard.record_index[0]):03d}",
              "cache_token": make_token(kind="ig", model=ref.digest, rows=rows_token(shard), cfg=repr(cfg), code=code)}
             for shard in records]
    done = run_stored(ig_shard_task, calls)
    parts = {int(shard.record_index[0]): value for shard, (value, _) in zip(records, done)}
    # secret_token_rows lays rows out grouped by record in record order, so concatenation restores it
    return torch.cat([parts[r] for r in rows.record_index.unique().tolist()]), sum(spent for _, spent in done)
