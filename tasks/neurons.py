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
from transformers import PreTrainedModel

import lib.core.attribution
from lib.core.adapter import FFNAdapter
from lib.core.attribution import ffn_activations, grad_x_act
from lib.core.io import json_digest, load_tensors, save_tensors, saved_seconds
from lib.families.masked import MaskedRows, take
from tasks import cached_task_options, code_digest, make_token, store_path


def timed_store(token: str, fn: Callable[[], torch.Tensor]) -> str:
    """Run `fn`, save its tensor and run time under the token, return the file path."""
    start = time.perf_counter()
    value = fn()
    path = store_path(token)
    save_tensors(path, {"value": value}, meta={"seconds": f"{time.perf_counter() - start:.6f}"})
    return str(path)


@task(name="activations-shard", task_run_name="activations-{label}", **cached_task_options())
def activations_shard_task(model: PreTrainedModel, rows: MaskedRows, label: str, cache_token: str) -> str:
    """FFN activations (B, L, d_ff) at each row's masked position."""
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: ffn_activations(
        model, adapter, rows.input_ids, rows.attention_mask, rows.positions))


@task(name="attribution-shard", task_run_name="attribution-{label}", **cached_task_options())
def attribution_shard_task(model: PreTrainedModel, rows: MaskedRows, label: str, cache_token: str) -> str:
    """Grad x Act of the gold logit, summed over the shard's rows: (L, d_ff)."""
    adapter = FFNAdapter.for_model(model)
    return timed_store(cache_token, lambda: grad_x_act(
        model, adapter, rows.input_ids, rows.attention_mask, rows.positions, rows.gold_ids))


def run_cached(task_fn: Task, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, float]:
    """Call a store-backed cached task; recompute if its stored file has vanished."""
    path = Path(task_fn(*args, **kwargs))
    if not path.is_file():  # the cache record outlived the store: recompute, do not trust it
        path = Path(task_fn.with_options(refresh_cache=True)(*args, **kwargs))
    return load_tensors(path)["value"], saved_seconds(path)


def rows_token(rows: MaskedRows) -> str:
    """Content digest of a shard's rows."""
    return json_digest([rows.input_ids.tolist(), rows.positions.tolist(), rows.gold_ids.tolist()])


def shards(rows: MaskedRows, size: int) -> list[MaskedRows]:
    """Consecutive row shards of at most `size` rows."""
    return [take(rows, torch.arange(s, min(s + size, len(rows)))) for s in range(0, len(rows), size)]


def shard_stats(kind: str, task_fn: Task, model: PreTrainedModel, model_digest: str, rows: MaskedRows,
                shard_size: int, label: str) -> tuple[list[torch.Tensor], float]:
    """One content-cached task per shard of `rows`: the shards' results and their compute seconds."""
    code, parts, seconds = code_digest(lib.core.attribution), [], 0.0
    for i, shard in enumerate(shards(rows, shard_size)):
        token = make_token(kind=kind, model=model_digest, rows=rows_token(shard), code=code)
        value, spent = run_cached(task_fn, model, shard, label=f"{label}-{i:03d}", cache_token=token)
        parts.append(value)
        seconds += spent
    return parts, seconds
