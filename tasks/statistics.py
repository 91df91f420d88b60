"""The forget targets' neuron statistics in one call, from the content-cached tasks the masked stages use:
activations and attribution per shard of rows, clusters of the activations, Integrated Gradients per sample.
The masked track's forget subsets (seesaw runs) and the causal tracks' unlearning stages call it; a neuron
method on a causal track thus costs its statistics once, and every later stage reuses them from the cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from lib.core.clustering import ClusterConfig
from lib.core.ig import IGConfig, cap_targets
from lib.core.io import file_digest
from lib.core.statistics import NeuronsConfig
from lib.methods import Stats
from tasks import ModelRef, shared
from tasks.clusters import activations_digest, cluster_stats
from tasks.ig import Rows, ig_stats
from tasks.neurons import activations_shard_task, attribution_shard_task, shard_stats


def forget_statistics(ref: ModelRef, rows: Rows, owner: torch.Tensor, ig_rows: Rows, ig_owner: torch.Tensor,
                      clustering: ClusterConfig, ig: IGConfig, shard_size: int, label: str) -> Stats:
    """Attribution, activations and clusters of `rows`, IG of `ig_rows` (`owner`s: each row's record or sample)."""
    acts, _ = shard_stats("activations", activations_shard_task, ref, rows, shard_size, label)
    attr, s_attr = shard_stats("attribution", attribution_shard_task, ref, rows, shard_size, label)
    acts_t = torch.cat(acts)
    labels, s_clu = cluster_stats(acts_t, activations_digest(acts_t), clustering, label)
    scores, s_ig = ig_stats(ref, ig_rows, ig_owner, ig, label)
    return Stats(attribution=torch.stack(attr).sum(0), activations=acts_t,
                 clusters={layer: labels[layer].numpy() for layer in range(labels.shape[0])}, ig=scores,
                 ig_owner=ig_owner, seconds={"attribution": s_attr, "clusters": s_clu, "ig": s_ig})


def causal_statistics(model: PreTrainedModel, folder: Path, family: Any, forget: Any, cfg: NeuronsConfig,
                      label: str) -> Stats:
    """The statistics of a causal forget set's target tokens on the model saved in `folder` (before any edit)."""
    rows = cap_targets(family.target_rows(forget, cfg.targets), cfg.max_targets)
    ig_rows = cap_targets(rows, cfg.ig_max_targets)
    ref = shared(model, folder, "causal", file_digest(folder))
    return forget_statistics(ref, rows, rows.sample, ig_rows, ig_rows.sample, cfg.clustering, cfg.ig,
                             cfg.shard_size, label)
