"""Prefect tasks over FFN neurons: activations, attribution, clustering (content-cached per shard)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from prefect import Task, task
from transformers import PreTrainedModel

from lib.adapter import FFNAdapter
from lib.attribution import ffn_activations, grad_x_act
from lib.ig import IGConfig, integrated_gradients
from lib.io import load_tensors, save_tensors
from lib.masking import MaskedRows
from lib.methods.snku import cluster_all_layers
from tasks.common import cached_task_options, store_path


def _timed_store(token: str, fn: Callable[[], torch.Tensor]) -> str:
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
    return _timed_store(cache_token, lambda: ffn_activations(
        model, adapter, rows.input_ids, rows.attention_mask, rows.positions))


@task(name="attribution-shard", task_run_name="attribution-{label}", **cached_task_options())
def attribution_shard_task(model: PreTrainedModel, rows: MaskedRows, label: str, cache_token: str) -> str:
    """Grad x Act of the gold logit, summed over the shard's rows: (L, d_ff)."""
    adapter = FFNAdapter.for_model(model)
    return _timed_store(cache_token, lambda: grad_x_act(
        model, adapter, rows.input_ids, rows.attention_mask, rows.positions, rows.gold_ids))


@task(name="ig-shard", task_run_name="ig-{label}", **cached_task_options())
def ig_shard_task(model: PreTrainedModel, rows: MaskedRows, cfg: IGConfig, label: str, cache_token: str) -> str:
    """Integrated Gradients (B, L, d_ff) of every FFN neuron at each row's masked position."""
    adapter = FFNAdapter.for_model(model)
    return _timed_store(cache_token, lambda: integrated_gradients(model, adapter, rows, cfg))


@task(name="cluster-layers", task_run_name="cluster-{label}", **cached_task_options())
def cluster_task(activations: torch.Tensor, threshold: float, linkage: str, label: str, cache_token: str) -> str:
    """Correlation clustering of every layer's neurons: labels (L, d_ff)."""
    def labels() -> torch.Tensor:
        per_layer = cluster_all_layers(activations, threshold=threshold, linkage=linkage)
        return torch.from_numpy(np.stack([per_layer[i] for i in sorted(per_layer)]).astype(np.int64))
    return _timed_store(cache_token, labels)


def run_cached(task_fn: Task, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, float]:
    """Call a store-backed cached task; recompute if its stored file has vanished."""
    path = Path(task_fn(*args, **kwargs))
    if not path.is_file():  # the cache record outlived the store: recompute, do not trust it
        path = Path(task_fn.with_options(refresh_cache=True)(*args, **kwargs))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        seconds = float(handle.metadata()["seconds"])
    return load_tensors(path)["value"], seconds
