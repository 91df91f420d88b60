"""SNKU correlation clustering of FFN neurons and cluster scoring/selection (paper Sec. 3.2-3.3).

A neuron is coordinate i of the input of the FFN down-projection; its activation vector over
the N examples of a bag is one point of the N-dimensional example space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering

from lib.core.params import Positive

LINKAGES = ("average", "complete", "single")
RANK_BY = ("hyb", "sum", "avg")


@dataclass(frozen=True)
class ClusterConfig:
    """Agglomerative clustering of one layer's neurons on cosine distance (params section `clustering`)."""

    threshold: Positive = 0.7  # the paper's distance threshold 1 - S
    linkage: str = "average"

    def __post_init__(self) -> None:
        """Reject a threshold or linkage the clustering cannot use."""
        _check_clustering(self.threshold, self.linkage)


@dataclass(frozen=True)
class ClusterScore:
    """Scores of one cluster of one layer (Eqs. 6-8)."""

    layer: int
    cluster: int
    neurons: tuple[int, ...]
    sum: float
    avg: float
    hyb: float
    size: int


@dataclass(frozen=True)
class Selection:
    """Neurons chosen for editing, as (layer, neuron) sorted by attribution descending."""

    neurons: tuple[tuple[int, int], ...]
    clusters_used: int
    m_requested: int
    clusters: tuple[ClusterScore, ...]


def to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return `x` as a float64 numpy array (accepts torch tensors on any device)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def cosine_distance(acts: np.ndarray) -> np.ndarray:
    """Neuron-by-neuron distance D = 1 - cos over example space, from acts (N, d_ff)."""
    x = np.asarray(acts, dtype=np.float64)  # (N, d_ff)
    norms = np.linalg.norm(x, axis=0)  # (d_ff,)
    dead = norms == 0.0
    unit = x / np.where(dead, 1.0, norms)  # (N, d_ff)
    sim = unit.T @ unit  # (d_ff, d_ff)
    # A dead neuron (all-zero vector) has undefined cosine; similarity 0 ("no relation")
    # keeps it out of every cluster at thresholds <= 1 instead of producing NaN.
    sim[dead, :] = 0.0
    sim[:, dead] = 0.0
    dist = np.clip(1.0 - sim, 0.0, 2.0)  # (d_ff, d_ff)
    dist = (dist + dist.T) / 2.0  # float round-off can break exact symmetry
    np.fill_diagonal(dist, 0.0)
    return dist


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels by first appearance so cluster 0 holds neuron 0, and so on."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)  # old label ids sorted by their first neuron
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[np.unique(labels, return_inverse=True)[1]]


def _check_clustering(threshold: float, linkage: str) -> None:
    """A finite positive distance threshold and a linkage that works on precomputed distances."""
    if linkage == "ward":
        raise ValueError("linkage='ward' needs Euclidean features, not a precomputed cosine "
                         f"distance; use one of {LINKAGES}")
    if linkage not in LINKAGES:
        raise ValueError(f"linkage={linkage!r} is not supported; use one of {LINKAGES}")
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold={threshold} must be a finite distance > 0")


def _checked_acts(acts: np.ndarray | torch.Tensor, threshold: float, linkage: str) -> np.ndarray:
    """Validate clustering arguments and return acts as a float64 (N, d_ff) array."""
    _check_clustering(threshold, linkage)
    x = to_numpy(acts)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"acts must be a non-empty (N, d_ff) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("acts contains NaN or inf; activations must be finite")
    return x


def cluster_layer(acts: np.ndarray | torch.Tensor, threshold: float, linkage: str) -> np.ndarray:
    """Agglomerative clustering of neurons on cosine distance; returns (d_ff,) int labels."""
    x = _checked_acts(acts, threshold, linkage)  # (N, d_ff)
    if x.shape[1] == 1:
        return np.zeros(1, dtype=np.int64)  # sklearn needs >= 2 points
    model = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage=linkage,
                                    distance_threshold=float(threshold))
    return _canonical_labels(model.fit_predict(cosine_distance(x)))


def cluster_all_layers(activations: np.ndarray | torch.Tensor, cfg: ClusterConfig) -> dict[int, np.ndarray]:
    """Cluster every layer of activations (N, L, d_ff); returns layer -> (d_ff,) labels."""
    acts = to_numpy(activations)  # (N, L, d_ff)
    if acts.ndim != 3:
        raise ValueError(f"activations must be (N, L, d_ff), got shape {acts.shape}")
    return {layer: cluster_layer(acts[:, layer, :], cfg.threshold, cfg.linkage) for layer in range(acts.shape[1])}


def score_clusters(layer: int, labels: np.ndarray, attribution_layer: np.ndarray | torch.Tensor,
                   alpha: float = 0.5) -> list[ClusterScore]:
    """SUM (Eq. 6), AVG (Eq. 7) and HYB = SUM/|C|^alpha (Eq. 8) for every cluster of a layer."""
    lab = np.asarray(labels)
    attr = to_numpy(attribution_layer)
    if lab.ndim != 1 or attr.shape != lab.shape:
        raise ValueError(f"labels {lab.shape} and attribution {attr.shape} must both be (d_ff,)")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha={alpha} must be a finite number >= 0")
    scores = []
    for cluster in np.unique(lab):
        members = np.flatnonzero(lab == cluster)  # ascending neuron ids
        total = float(attr[members].sum())
        size = int(members.size)
        scores.append(ClusterScore(layer=layer, cluster=int(cluster),
                                   neurons=tuple(int(i) for i in members), sum=total,
                                   avg=total / size, hyb=total / size**alpha, size=size))
    return scores


def filter_clusters(scores: Sequence[ClusterScore], layer_max: float,
                    min_avg_frac: float = 0.02) -> list[ClusterScore]:
    """Keep clusters of one layer with AVG >= min_avg_frac * max_j A_j (Eq. 9)."""
    if not np.isfinite(min_avg_frac) or min_avg_frac < 0:
        raise ValueError(f"min_avg_frac={min_avg_frac} must be a finite number >= 0")
    layers = {s.layer for s in scores}
    if len(layers) > 1:
        raise ValueError(f"filter_clusters takes one layer's clusters, got layers {sorted(layers)}")
    return [s for s in scores if s.avg >= min_avg_frac * layer_max]


def _neuron_order(neurons: set[tuple[int, int]], attr: np.ndarray) -> list[tuple[int, int]]:
    """Sort (layer, neuron) pairs by attribution descending, ties by position for determinism."""
    return sorted(neurons, key=lambda ln: (-attr[ln[0], ln[1]], ln[0], ln[1]))


def _take_clusters(ranked: Sequence[ClusterScore], top_m: int,
                   k: int) -> tuple[int, set[tuple[int, int]]]:
    """Take the top M clusters, then further ones in score order until K neurons are pooled."""
    chosen: set[tuple[int, int]] = set()
    used = 0
    while used < len(ranked) and (used < top_m or len(chosen) < k):
        chosen.update((ranked[used].layer, n) for n in ranked[used].neurons)
        used += 1
    return used, chosen


def select_neurons(scores_all_layers: Sequence[ClusterScore],
                   attribution: np.ndarray | torch.Tensor, top_m: int = 20, *, k: int,
                   rank_by: str = "hyb") -> Selection:
    """Top-M filtered clusters by score, extended until K neurons; top K by attribution."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by={rank_by!r} is not supported; use one of {RANK_BY}")
    if top_m <= 0 or k <= 0:
        raise ValueError(f"top_m={top_m} and k={k} must both be positive integers")
    attr = to_numpy(attribution)  # (L, d_ff)
    if attr.ndim != 2:
        raise ValueError(f"attribution must be (L, d_ff), got shape {attr.shape}")
    ranked = sorted(scores_all_layers, key=lambda s: (-getattr(s, rank_by), s.layer, s.cluster))
    pool = {(s.layer, n) for s in ranked for n in s.neurons}
    if k > len(pool):
        raise ValueError(f"k={k} exceeds the {len(pool)} neurons available in the filtered clusters")
    if any(not (0 <= l < attr.shape[0] and 0 <= n < attr.shape[1]) for l, n in pool):
        raise ValueError(f"cluster neurons fall outside attribution shape {attr.shape}")
    used, chosen = _take_clusters(ranked, top_m, k)
    return Selection(neurons=tuple(_neuron_order(chosen, attr)[:k]), clusters_used=used,
                     m_requested=top_m, clusters=tuple(ranked[:used]))
