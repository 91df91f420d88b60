"""SNKU: correlation-cluster selection of FFN neurons, then decay-with-noise (paper Sec. 3).

Reads the forget targets' statistics computed upstream (stages attribution and clustering, on the
activations stage's bag): Grad x Act attribution (L, d_ff) and each layer's cluster labels.
Clusters are scored SUM / AVG / HYB (Eqs. 6-8), those below the AVG filter dropped (Eq. 9), the
top M taken (more when K needs them), and their neurons' top K by attribution edited by decay with
noise (Eqs. 10-12; lib.core.editing).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.clustering import RANK_BY, ClusterScore, filter_clusters, score_clusters, select_neurons, to_numpy
from lib.core.editing import DecayEdit, decay_with_noise
from lib.core.params import Count, Fraction, NonNegative
from lib.methods import Inputs, Report

label = "SNKU"  # the name every report prints
families = ("masked", "causal")
needs = ("attribution", "activations", "clusters")
kind = "neurons"


@dataclass(frozen=True)
class Config(DecayEdit):
    """SNKU selection (top M clusters, HYB exponent, AVG filter, ranking) plus the shared decay edit."""

    top_m: Count = 20
    hyb_alpha: NonNegative = 0.5  # HYB = SUM / |C|^hyb_alpha: 0 is SUM, 1 is AVG
    min_avg_frac: Fraction = 0.02  # a share of the layer's max attribution
    rank_by: str = "hyb"

    def __post_init__(self) -> None:
        """Reject values the algorithm cannot use (the decay edit's check covers every field's range)."""
        super().__post_init__()
        if self.rank_by not in RANK_BY:
            raise ValueError(f"rank_by={self.rank_by!r} invalid; allowed {RANK_BY}")


def filtered_scores(adapter: FFNAdapter, inputs: Inputs, cfg: Config) -> list[ClusterScore]:
    """Score every layer's clusters (Eqs. 6-8) and keep those passing the AVG filter (Eq. 9)."""
    stats = inputs.stats
    if stats.attribution is None:
        raise ValueError("snku needs stats.attribution (L, d_ff): run the attribution stage first")
    attr = to_numpy(stats.attribution)  # (L, d_ff)
    if attr.shape != (adapter.n_layers, adapter.d_ff):
        raise ValueError(f"attribution shape {attr.shape} != (n_layers, d_ff) = {(adapter.n_layers, adapter.d_ff)}")
    labels = stats.clusters
    if labels is None or set(labels) != set(range(adapter.n_layers)):
        got = None if labels is None else sorted(labels)
        raise ValueError(f"snku needs stats.clusters for layers 0..{adapter.n_layers - 1}, got {got}")
    kept: list[ClusterScore] = []
    for layer in range(adapter.n_layers):
        scores = score_clusters(layer, labels[layer], attr[layer], cfg.hyb_alpha)
        kept += filter_clusters(scores, float(attr[layer].max()), cfg.min_avg_frac)
    return kept


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Select neurons by SNKU cluster scores and apply decay-with-noise to `model` in place."""
    adapter = FFNAdapter.for_model(model)
    start = time.perf_counter()
    selection = select_neurons(filtered_scores(adapter, inputs, cfg), inputs.stats.attribution, cfg.top_m,
                               k=cfg.k, rank_by=cfg.rank_by)
    selected = time.perf_counter()
    decay_with_noise(adapter, selection.neurons, cfg.alpha, cfg.sigma, torch.Generator().manual_seed(inputs.seed),
                     cfg.decay_mode)
    return Report(strength=float(len(selection.neurons)), strength_name="neurons", steps=1,
                  trainable=len(selection.neurons) * adapter.d_model, neurons=selection.neurons,
                  selection_seconds=selected - start, edit_seconds=time.perf_counter() - selected,
                  details={"clusters_used": selection.clusters_used})
