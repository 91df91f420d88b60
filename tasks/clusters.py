"""Prefect task of the clustering stage: SNKU's correlation clustering of every layer's neurons, content-cached."""
from __future__ import annotations

import numpy as np
import torch
from prefect import task

import lib.core.clustering
from lib.core.clustering import ClusterConfig, cluster_all_layers
from lib.core.io import tensors_digest
from tasks import cached_task_options, code_digest, make_token
from tasks.neurons import run_stored, timed_store


@task(name="cluster-layers", task_run_name="cluster-{label}", **cached_task_options())
def cluster_task(activations: torch.Tensor, cfg: ClusterConfig, label: str, cache_token: str) -> str:
    """Correlation clustering of every layer's neurons: labels (L, d_ff)."""
    def labels() -> torch.Tensor:
        per_layer = cluster_all_layers(activations, cfg)
        return torch.from_numpy(np.stack([per_layer[i] for i in sorted(per_layer)]).astype(np.int64))
    return timed_store(cache_token, labels)


def cluster_stats(activations: torch.Tensor, digest: str, cfg: ClusterConfig, label: str) -> tuple[torch.Tensor, float]:
    """Cluster labels (L, d_ff) of activations with content digest `digest` (cached) and their seconds."""
    token = make_token(acts=digest, threshold=cfg.threshold, linkage=cfg.linkage,
                       code=code_digest(lib.core.clustering))
    return run_stored(cluster_task, [{"activations": activations, "cfg": cfg, "label": label, "cache_token": token}])[0]


def activations_digest(activations: torch.Tensor) -> str:
    """Content digest of an in-memory activation tensor (the clustering cache key of a subset)."""
    return tensors_digest({"a": activations})
