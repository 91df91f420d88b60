"""Prefect tasks over FFN neurons: activations and attribution of masked rows, content-cached per shard.

Results live in .cache/store (not a DVC output: DVC deletes a stage's outputs before rerunning it), so a
killed stage resumes at the next shard; the flows rewrite their DVC outputs from these results every time.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from prefect import Task, task

import lib.core.attribution
from lib.core.adapter import FFNAdapter
from lib.core.attribution import ffn_activations, grad_x_act
from lib.core.io import json_digest, load_tensors, save_tensors, saved_seconds
from lib.families.masked import MaskedRows, take
from lib.core.models import ComputeConfig
from tasks import (ModelRef, adopt, cached_task_options, code_digest, current_compute, make_token, model_of,
                   run_all, store_path)


def timed_store(token: str, fn: Callable[[], torch.Tensor]) -> str:
    """Run `fn`, save its tensor and run time under the token, return the file path."""
    start = time.perf_counter()
    value = fn()
    path = store_path(token)
    save_tensors(path, {"value": value}, meta={"seconds": f"{time.perf_counter() - start:.6f}"})
    return str(path)


@task(name="activations-shard", task_run_name="activations-{label}", **cached_task_options())
def activations_shard_task(ref: ModelRef, compute: ComputeConfig, rows: MaskedRows, label: str,
                           cache_token: str) -> str:
    """FFN activations (B, L, d_ff) at each row's masked position."""
    adopt(compute)
    model = model_of(ref)
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: ffn_activations(
        model, adapter, rows.input_ids, rows.attention_mask, rows.positions))


@task(name="attribution-shard", task_run_name="attribution-{label}", **cached_task_options())
def attribution_shard_task(ref: ModelRef, compute: ComputeConfig, rows: MaskedRows, label: str,
                           cache_token: str) -> str:
    """Grad x Act of the gold logit, summed over the shard's rows: (L, d_ff)."""
    adopt(compute)
    model = model_of(ref)
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: grad_x_act(
        model, adapter, rows.input_ids, rows.attention_mask, rows.positions, rows.gold_ids))


def run_stored(task_fn: Task, calls: list[dict[str, Any]]) -> list[tuple[torch.Tensor, float]]:
    """Run store-backed cached tasks (the stage's task runner); recompute those whose stored file has vanished."""
    paths = [Path(p) for p in run_all(task_fn, calls)]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]  # the cache record outlived the store
    for i, path in zip(missing, run_all(task_fn.with_options(refresh_cache=True), [calls[i] for i in missing])):
        paths[i] = Path(path)
    return [(load_tensors(path)["value"], saved_seconds(path)) for path in paths]


def rows_token(rows: MaskedRows) -> str:
    """Content digest of a shard's rows."""
    return json_digest([rows.input_ids.tolist(), rows.positions.tolist(), rows.gold_ids.tolist()])


def shards(rows: MaskedRows, size: int) -> list[MaskedRows]:
    """Consecutive row shards of at most `size` rows."""
    return [take(rows, torch.arange(s, min(s + size, len(rows)))) for s in range(0, len(rows), size)]


def shard_stats(kind: str, task_fn: Task, ref: ModelRef, rows: MaskedRows, shard_size: int,
                label: str) -> tuple[list[torch.Tensor], float]:
    """One content-cached task per shard of `rows`: the shards' results and their compute seconds."""
    code = code_digest(lib.core.attribution)
    calls = [{"ref": ref, "compute": current_compute(), "rows": shard, "label": f"{label}-{i:03d}",
              "cache_token": make_token(kind=kind, model=ref.digest, rows=rows_token(shard), code=code)}
             for i, shard in enumerate(shards(rows, shard_size))]
    done = run_stored(task_fn, calls)
    return [value for value, _ in done], sum(spent for _, spent in done)
