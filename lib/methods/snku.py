"""SNKU: correlation-cluster selection of FFN neurons, then decay-with-noise (paper Sec. 3)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lib.adapter import FFNAdapter
from lib.clustering import (
    RANK_BY,
    ClusterScore,
    cluster_layer,
    filter_clusters,
    score_clusters,
    select_neurons,
    to_numpy,
)
from lib.editing import DECAY_MODES, decay_with_noise
from lib.methods.base import EditReport, MethodInputs

name = "snku"
# upstream stages whose compute time belongs to this method's selection time (paper: "Time")
selection_stages = ("attribution", "clustering")
reads = ("attribution", "activations", "cluster_labels")  # MethodInputs fields run() uses


@dataclass(frozen=True)
class Config:
    """SNKU selection and edit hyper-parameters (clustering threshold/linkage live upstream)."""

    top_m: int = 20
    k: int = 300
    hyb_alpha: float = 0.5
    min_avg_frac: float = 0.02
    rank_by: str = "hyb"
    decay_mode: str = "one_minus_pow"
    alpha: float = 0.99
    sigma: float = 0.05

    def __post_init__(self) -> None:
        """Reject values the algorithm cannot use."""
        if self.top_m <= 0 or self.k <= 0:
            raise ValueError(f"top_m={self.top_m} and k={self.k} must both be positive")
        if not (self.hyb_alpha >= 0 and self.min_avg_frac >= 0 and self.sigma >= 0):
            raise ValueError(f"hyb_alpha={self.hyb_alpha}, min_avg_frac={self.min_avg_frac}, "
                             f"sigma={self.sigma} must all be >= 0")
        if self.rank_by not in RANK_BY or self.decay_mode not in DECAY_MODES:
            raise ValueError(f"rank_by={self.rank_by!r} (allowed {RANK_BY}) or decay_mode="
                             f"{self.decay_mode!r} (allowed {DECAY_MODES}) invalid")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must lie in (0, 1]")


def cluster_all_layers(activations: np.ndarray | torch.Tensor, threshold: float = 0.7,
                       linkage: str = "average") -> dict[int, np.ndarray]:
    """Cluster every layer of activations (N, L, d_ff); returns layer -> (d_ff,) labels."""
    acts = to_numpy(activations)  # (N, L, d_ff)
    if acts.ndim != 3:
        raise ValueError(f"activations must be (N, L, d_ff), got shape {acts.shape}")
    return {layer: cluster_layer(acts[:, layer, :], threshold, linkage)
            for layer in range(acts.shape[1])}


def filtered_scores(adapter: FFNAdapter, inputs: MethodInputs, cfg: Config) -> list[ClusterScore]:
    """Score every layer's clusters (Eqs. 6-8) and keep those passing the AVG filter (Eq. 9)."""
    attr = to_numpy(inputs.attribution)  # (L, d_ff)
    if attr.shape != (adapter.n_layers, adapter.d_ff):
        raise ValueError(f"attribution shape {attr.shape} != (n_layers, d_ff) = "
                         f"{(adapter.n_layers, adapter.d_ff)}")
    labels = inputs.cluster_labels
    if labels is None or set(labels) != set(range(adapter.n_layers)):
        got = None if labels is None else sorted(labels)
        raise ValueError(f"snku needs cluster_labels for layers 0..{adapter.n_layers - 1}, got {got}")
    kept: list[ClusterScore] = []
    for layer in range(adapter.n_layers):
        scores = score_clusters(layer, labels[layer], attr[layer], cfg.hyb_alpha)
        kept += filter_clusters(scores, float(attr[layer].max()), cfg.min_avg_frac)
    return kept


def run(model: nn.Module, adapter: FFNAdapter, inputs: MethodInputs, cfg: Config) -> EditReport:
    """Select neurons by SNKU cluster scores and apply decay-with-noise to `model` in place."""
    start = time.perf_counter()
    selection = select_neurons(filtered_scores(adapter, inputs, cfg), inputs.attribution,
                               cfg.top_m, k=cfg.k, rank_by=cfg.rank_by)
    selected = time.perf_counter()
    stats = decay_with_noise(adapter, selection.neurons, cfg.alpha, cfg.sigma,
                             torch.Generator().manual_seed(inputs.seed), cfg.decay_mode)
    return EditReport(method=name, category=inputs.category, neurons=selection.neurons,
                      clusters_used=selection.clusters_used,
                      n_weights_edited=stats.n_weights_edited,
                      fraction_weights_edited=stats.fraction_weights_edited,
                      selection_seconds=selected - start, edit_seconds=time.perf_counter() - selected)
