"""Tests for lib.core.clustering: correlation clustering, cluster scores, the AVG filter, selection."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.core.clustering import (ClusterConfig, ClusterScore, cluster_all_layers, cluster_layer, cosine_distance,
                                 filter_clusters, score_clusters, select_neurons)


def _two_groups_and_anti(n: int = 40, seed: int = 0) -> np.ndarray:
    """Acts (N, 7): neurons 0,2,4 follow signal a; 1,3,5 follow b; neuron 6 is -a."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    cols = {0: a, 2: 2 * a, 4: 0.5 * a, 1: b, 3: 3 * b, 5: b, 6: -a}
    acts = np.stack([cols[i] + 0.01 * rng.normal(size=n) for i in range(7)], axis=1)
    return acts


def test_cluster_layer_finds_correlated_groups_and_isolates_anticorrelated() -> None:
    labels = cluster_layer(_two_groups_and_anti(), threshold=0.7, linkage="average")
    assert labels.shape == (7,)
    # canonical numbering: cluster id = order of first neuron
    assert labels.tolist() == [0, 1, 0, 1, 0, 1, 2]


@pytest.mark.parametrize("linkage", ["average", "complete", "single"])
def test_cluster_layer_linkages_agree_on_clear_groups(linkage: str) -> None:
    labels = cluster_layer(_two_groups_and_anti(), threshold=0.7, linkage=linkage)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1, 2]


def test_cluster_layer_deterministic_and_accepts_tensor() -> None:
    acts = _two_groups_and_anti(seed=3)
    first = cluster_layer(acts, threshold=0.7, linkage="average")
    assert np.array_equal(first, cluster_layer(acts.copy(), threshold=0.7, linkage="average"))
    assert np.array_equal(first, cluster_layer(torch.from_numpy(acts).float(), threshold=0.7, linkage="average"))


def test_dead_neurons_are_singletons_with_distance_one() -> None:
    acts = _two_groups_and_anti()
    acts = np.concatenate([acts, np.zeros((acts.shape[0], 2))], axis=1)  # neurons 7, 8 dead
    dist = cosine_distance(acts)
    assert np.isfinite(dist).all()
    assert np.allclose(dist[7, :7], 1.0) and dist[7, 8] == 1.0 and dist[7, 7] == 0.0
    assert np.array_equal(dist, dist.T)
    labels = cluster_layer(acts, threshold=0.7, linkage="average")
    assert labels[7] != labels[8]
    assert labels[7] not in labels[:7] and labels[8] not in labels[:7]


def test_cluster_layer_high_threshold_merges_all() -> None:
    labels = cluster_layer(_two_groups_and_anti(), threshold=2.5, linkage="average")
    assert set(labels.tolist()) == {0}


def test_cluster_layer_rejects_ward_and_bad_input() -> None:
    acts = _two_groups_and_anti()
    with pytest.raises(ValueError, match="ward"):
        cluster_layer(acts, threshold=0.7, linkage="ward")
    with pytest.raises(ValueError, match="bogus"):
        cluster_layer(acts, threshold=0.7, linkage="bogus")
    with pytest.raises(ValueError, match="threshold"):
        cluster_layer(acts, threshold=0.0, linkage="average")
    with pytest.raises(ValueError, match="shape"):
        cluster_layer(acts[0], threshold=0.7, linkage="average")
    # the params schema refuses the same values before any clustering runs
    with pytest.raises(ValueError, match="ward"):
        ClusterConfig(linkage="ward")
    with pytest.raises(ValueError, match="threshold"):
        ClusterConfig(threshold=0.0)


def test_cluster_all_layers_clusters_each_layer_with_config() -> None:
    """cluster_all_layers (moved here from SNKU) clusters every layer of (N, L, d_ff) with the config."""
    acts = _two_groups_and_anti()
    stacked = np.ascontiguousarray(np.stack([acts, acts[:, ::-1]], axis=1))  # (N, 2, 7)
    labels = cluster_all_layers(torch.from_numpy(stacked), ClusterConfig())
    assert sorted(labels) == [0, 1]
    assert labels[0].tolist() == [0, 1, 0, 1, 0, 1, 2]
    assert np.array_equal(labels[1], cluster_layer(stacked[:, 1], threshold=0.7, linkage="average"))
    assert set(cluster_all_layers(stacked, ClusterConfig(threshold=2.5))[1].tolist()) == {0}
    with pytest.raises(ValueError, match="shape"):
        cluster_all_layers(acts, ClusterConfig())


def test_score_clusters_sum_avg_hyb_hand_made() -> None:
    labels = np.array([0, 1, 0, 0, 1, 2])
    attr = np.array([1.0, 4.0, 2.0, 3.0, 0.0, -1.0])
    scores = {s.cluster: s for s in score_clusters(5, labels, attr, alpha=0.5)}
    c0, c1, c2 = scores[0], scores[1], scores[2]
    assert c0.layer == 5 and c0.neurons == (0, 2, 3) and c0.size == 3
    assert c0.sum == pytest.approx(6.0) and c0.avg == pytest.approx(2.0)
    assert c0.hyb == pytest.approx(6.0 / math.sqrt(3))
    assert (c1.sum, c1.avg, c1.hyb) == pytest.approx((4.0, 2.0, 4.0 / math.sqrt(2)))
    assert (c2.sum, c2.avg, c2.hyb) == pytest.approx((-1.0, -1.0, -1.0))
    # alpha=1 makes HYB equal AVG, alpha=0 makes it SUM
    for s in score_clusters(0, labels, attr, alpha=1.0):
        assert s.hyb == pytest.approx(s.avg)
    for s in score_clusters(0, labels, torch.tensor(attr), alpha=0.0):
        assert s.hyb == pytest.approx(s.sum)


def test_score_clusters_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="d_ff"):
        score_clusters(0, np.array([0, 1]), np.array([1.0, 2.0, 3.0]))


def test_filter_clusters_two_percent_rule() -> None:
    # layer max A_j = 100 -> threshold AVG >= 2.0
    labels = np.array([0, 0, 1, 1, 2])
    attr = np.array([100.0, -96.0, 1.0, 2.9, 1.99])  # AVGs: 2.0, 1.95, 1.99
    scores = score_clusters(0, labels, attr)
    kept = filter_clusters(scores, layer_max=float(attr.max()))
    assert [s.cluster for s in kept] == [0]
    kept_loose = filter_clusters(scores, layer_max=100.0, min_avg_frac=0.0196)
    assert [s.cluster for s in kept_loose] == [0, 2]
    assert len(filter_clusters(scores, layer_max=100.0, min_avg_frac=0.0)) == 3


def test_filter_clusters_rejects_mixed_layers() -> None:
    s0 = ClusterScore(0, 0, (0,), 1.0, 1.0, 1.0, 1)
    s1 = ClusterScore(1, 0, (0,), 1.0, 1.0, 1.0, 1)
    with pytest.raises(ValueError, match="layers"):
        filter_clusters([s0, s1], layer_max=1.0)


def _two_layer_case() -> tuple[list[ClusterScore], np.ndarray]:
    """Layer 0: clusters {0,1} (hyb high), {2,3,4}; layer 1: {0}, {1,2}."""
    attr = np.array([[5.0, 1.0, 3.0, 3.0, 3.0],
                     [9.0, 0.5, 0.4, 0.0, 0.0]])
    scores = (score_clusters(0, np.array([0, 0, 1, 1, 1]), attr[0])
              + score_clusters(1, np.array([0, 1, 1, 2, 2]), attr[1]))
    return scores, attr


def test_select_neurons_orders_by_attribution_within_top_m() -> None:
    scores, attr = _two_layer_case()
    # HYB: L1C0 = 9, L0C1 = 9/sqrt3 = 5.20, L0C0 = 6/sqrt2 = 4.24, L1C1 = 0.64, L1C2 = 0
    sel = select_neurons(scores, attr, top_m=2, k=3, rank_by="hyb")
    assert [(c.layer, c.cluster) for c in sel.clusters] == [(1, 0), (0, 1)]
    assert sel.neurons == ((1, 0), (0, 2), (0, 3))
    assert sel.clusters_used == 2 and sel.m_requested == 2


def test_select_neurons_rank_by_sum_and_avg() -> None:
    scores, attr = _two_layer_case()
    by_sum = select_neurons(scores, attr, top_m=1, k=1, rank_by="sum")
    assert (by_sum.clusters[0].layer, by_sum.clusters[0].cluster) == (0, 1)  # SUM 9 ties L1C0; layer 0 first
    by_avg = select_neurons(scores, attr, top_m=1, k=1, rank_by="avg")
    assert (by_avg.clusters[0].layer, by_avg.clusters[0].cluster) == (1, 0)  # AVG 9
    assert by_avg.neurons == ((1, 0),)


def test_select_neurons_extends_beyond_m_when_k_needs_more() -> None:
    scores, attr = _two_layer_case()
    sel = select_neurons(scores, attr, top_m=1, k=5, rank_by="hyb")
    # M=1 gives 1 neuron; clusters L0C1 (3) and L0C0 (2) are added to reach K=5.
    assert sel.clusters_used == 3 and sel.m_requested == 1
    assert sel.neurons == ((1, 0), (0, 0), (0, 2), (0, 3), (0, 4))
    assert len(set(sel.neurons)) == 5


def test_select_neurons_k_too_large_or_invalid() -> None:
    scores, attr = _two_layer_case()
    with pytest.raises(ValueError, match="k=11.*10"):
        select_neurons(scores, attr, top_m=20, k=11)
    with pytest.raises(ValueError, match="k=0"):
        select_neurons(scores, attr, top_m=20, k=0)
    with pytest.raises(ValueError, match="rank_by"):
        select_neurons(scores, attr, top_m=20, k=1, rank_by="max")


def test_select_neurons_fewer_clusters_than_m() -> None:
    scores, attr = _two_layer_case()
    sel = select_neurons(scores, torch.tensor(attr), top_m=20, k=10)
    assert sel.clusters_used == 5 and sel.m_requested == 20
    assert sel.neurons[0] == (1, 0) and len(sel.neurons) == 10
