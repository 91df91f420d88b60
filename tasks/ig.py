"""Prefect task of the ig stage (and the causal tracks' statistics): Integrated Gradients of every FFN neuron, one
cached task per secret or sample."""
from __future__ import annotations

from typing import TypeVar

import torch
from prefect import task

import lib.core.ig
from lib.core.adapter import FFNAdapter, TargetRows
from lib.core.ig import IGConfig, integrated_gradients
from lib.families.masked import MaskedRows, iter_chunks, take
from lib.core.models import ComputeConfig
from tasks import ModelRef, adopt, cached_task_options, code_digest, current_compute, make_token, model_of
from tasks.neurons import rows_token, run_stored, timed_store

Rows = TypeVar("Rows", MaskedRows, TargetRows)  # one row per target token: masked [MASK] rows or causal next-token rows


@task(name="ig-shard", task_run_name="ig-{label}", **cached_task_options())
def ig_shard_task(ref: ModelRef, compute: ComputeConfig, rows: Rows, cfg: IGConfig, label: str,
                  cache_token: str) -> str:
    """Integrated Gradients (B, L, d_ff) of every FFN neuron at each row's scored position."""
    adopt(compute)
    model = model_of(ref)
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: integrated_gradients(model, adapter, rows, cfg))


def by_record(rows: Rows, owner: torch.Tensor) -> list[Rows]:
    """The rows of each owner (record, sample), in order: IG is cached per owner, so any subset of them reuses it."""
    # each owner's rows trimmed to their own length: the cache key must not depend on the other rows' padding
    return [next(iter_chunks(take(rows, (owner == r).nonzero().flatten()), len(rows)))
            for r in owner.unique().tolist()]


def ig_stats(ref: ModelRef, rows: Rows, owner: torch.Tensor, cfg: IGConfig, label: str) -> tuple[torch.Tensor, float]:
    """IG (R, L, d_ff) of `rows` in their order, one cached task per owner (side by side on Ray), its seconds.

    `owner` (R,) names each row's record or sample; rows must be grouped by owner in ascending owner order (as
    secret_token_rows and target_rows lay them out), so concatenating the owners' parts restores the order."""
    code, owners = code_digest(lib.core.ig), owner.unique().tolist()
    calls = [{"ref": ref, "compute": current_compute(), "rows": shard, "cfg": cfg, "label": f"{label}-r{r:03d}",
              "cache_token": make_token(kind="ig", model=ref.digest, rows=rows_token(shard), cfg=repr(cfg), code=code)}
             for r, shard in zip(owners, by_record(rows, owner))]
    done = run_stored(ig_shard_task, calls)
    return torch.cat([value for value, _ in done]), sum(spent for _, spent in done)
