"""Tests for the method registry, SNKU's run and the random-neuron control."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import Tensor

from lib.core.adapter import FFNAdapter
from lib.core.clustering import cluster_layer
from lib.core.editing import decay_factors
from lib.methods import METHODS, MethodInputs, get_method, make_config, random_neurons, snku
from tests.tiny_models import D_FF, HIDDEN, N_LAYERS, tiny_bert_mlm, tiny_gpt2


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """Deep copy of a model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _hand_inputs(seed: int = 0) -> MethodInputs:
    """Layer 0: clusters of 4 neurons; layer 1: singletons; attribution peaks in layer 1."""
    attribution = torch.full((N_LAYERS, D_FF), 0.01)
    attribution[0, 0:4] = torch.tensor([5.0, 4.0, 3.0, 2.0])  # cluster 0 of layer 0
    attribution[1, 10] = 10.0  # singleton cluster in layer 1
    attribution[1, 20] = 1.0
    labels = {0: np.arange(D_FF) // 4, 1: np.arange(D_FF)}
    acts = torch.zeros(3, N_LAYERS, D_FF)
    return MethodInputs(category="NAME", attribution=attribution, activations=acts,
                        cluster_labels=labels, seed=seed)


def test_registry_and_get_method_error() -> None:
    assert set(METHODS) == {"ftm", "gare", "depn", "apneap", "snku", "random"}
    assert get_method("snku") is snku and get_method("random") is random_neurons
    for key, method in METHODS.items():
        assert method.name == key and dataclasses.is_dataclass(method.Config)
    with pytest.raises(ValueError, match="'simu'.*apneap, depn, ftm, gare, random, snku"):
        get_method("simu")


def test_every_registered_method_has_its_params_section() -> None:
    """The registry key is also the params key: params.yaml has exactly one section per method."""
    import yaml
    from pathlib import Path

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert set(params["methods"]) == set(METHODS)


def test_make_config_and_validation() -> None:
    cfg = make_config(snku.Config, {"k": 5, "top_m": 2, "rank_by": "sum"})
    assert (cfg.k, cfg.top_m, cfg.rank_by, cfg.hyb_alpha) == (5, 2, "sum", 0.5)
    with pytest.raises(ValueError, match="threshold"):
        make_config(snku.Config, {"threshold": 0.7})
    with pytest.raises(ValueError, match="rank_by"):
        snku.Config(rank_by="max")
    with pytest.raises(ValueError, match="alpha"):
        random_neurons.Config(alpha=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 3  # type: ignore[misc]


def test_cluster_all_layers_matches_per_layer() -> None:
    acts = torch.rand(12, N_LAYERS, D_FF, generator=torch.Generator().manual_seed(0))
    labels = snku.cluster_all_layers(acts, threshold=0.3, linkage="average")
    assert sorted(labels) == [0, 1]
    for layer in (0, 1):
        assert np.array_equal(labels[layer], cluster_layer(acts[:, layer].numpy(), 0.3))
    with pytest.raises(ValueError, match="N, L, d_ff"):
        snku.cluster_all_layers(acts[0])


def test_snku_run_selects_and_edits_expected_neurons() -> None:
    model = tiny_bert_mlm(0)
    before = _snapshot(model)
    adapter = FFNAdapter.for_model(model)
    cfg = snku.Config(top_m=1, k=3, alpha=0.9, sigma=0.1, decay_mode="one_minus_pow")
    report = snku.run(model, adapter, _hand_inputs(seed=5), cfg)
    # HYB: layer 1 neuron 10 -> 10; layer 0 cluster 0 -> 14/2 = 7; M=1 is extended to reach K=3.
    assert report.neurons == ((1, 10), (0, 0), (0, 1))
    assert report.clusters_used == 2 and report.method == "snku" and report.category == "NAME"
    assert report.n_weights_edited == 3 * HIDDEN
    eps = torch.randn((3, HIDDEN), generator=torch.Generator().manual_seed(5)) * 0.1
    delta = decay_factors(3, 0.9).float()
    after = model.state_dict()
    for rank, (layer, neuron) in enumerate(report.neurons):
        name = f"bert.encoder.layer.{layer}.output.dense.weight"
        before[name][:, neuron] = delta[rank] * before[name][:, neuron] + eps[rank]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert report.selection_seconds >= 0 and report.edit_seconds >= 0


def test_snku_filter_drops_weak_clusters() -> None:
    inputs = _hand_inputs()
    # Only layer-0 cluster 0 (AVG 3.5) and layer-1 neurons 10, 20 pass AVG >= 2% of max.
    with pytest.raises(ValueError, match="k=7 exceeds the 6"):
        snku.run(tiny_bert_mlm(0), FFNAdapter.for_model(tiny_bert_mlm(0)), inputs,
                 snku.Config(k=7))


def test_snku_same_seed_same_model_and_missing_labels() -> None:
    states = []
    for _ in range(2):
        model = tiny_gpt2(0)
        snku.run(model, FFNAdapter.for_model(model), _hand_inputs(seed=3), snku.Config(k=4))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    no_labels = dataclasses.replace(_hand_inputs(), cluster_labels=None)
    with pytest.raises(ValueError, match="cluster_labels"):
        snku.run(tiny_gpt2(0), FFNAdapter.for_model(tiny_gpt2(0)), no_labels, snku.Config(k=1))


def test_random_draw_distinct_valid_reproducible() -> None:
    first = random_neurons.draw_neurons(N_LAYERS, D_FF, 50, seed=11)
    assert first == random_neurons.draw_neurons(N_LAYERS, D_FF, 50, seed=11)
    assert first != random_neurons.draw_neurons(N_LAYERS, D_FF, 50, seed=12)
    assert len(set(first)) == 50
    assert all(0 <= l < N_LAYERS and 0 <= n < D_FF for l, n in first)
    assert {l for l, _ in first} == {0, 1}
    everything = random_neurons.draw_neurons(N_LAYERS, D_FF, N_LAYERS * D_FF, seed=0)
    assert len(set(everything)) == N_LAYERS * D_FF
    with pytest.raises(ValueError, match="k=75"):
        random_neurons.draw_neurons(N_LAYERS, D_FF, 75, seed=0)


def test_random_run_edits_only_drawn_neurons_on_gpt2() -> None:
    model = tiny_gpt2(0)
    before = _snapshot(model)
    cfg = random_neurons.Config(k=6, alpha=0.99, sigma=0.05, decay_mode="pow")
    report = random_neurons.run(model, FFNAdapter.for_model(model), _hand_inputs(seed=9), cfg)
    assert report.neurons == random_neurons.draw_neurons(N_LAYERS, D_FF, 6, seed=9)
    assert report.clusters_used is None and report.method == "random"
    eps = torch.randn((6, HIDDEN), generator=torch.Generator().manual_seed(9)) * 0.05
    delta = decay_factors(6, 0.99, "pow").float()
    after = model.state_dict()
    for rank, (layer, neuron) in enumerate(report.neurons):
        name = f"transformer.h.{layer}.mlp.c_proj.weight"  # Conv1D: row = neuron
        before[name][neuron] = delta[rank] * before[name][neuron] + eps[rank]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ftm_leaves_every_weight_untouched() -> None:
    from lib.methods import ftm

    model = tiny_bert_mlm(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = ftm.run(model, FFNAdapter.for_model(model), _hand_inputs(seed=1), ftm.Config())
    assert report.neurons == () and report.n_weights_edited == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tensors_digest_tracks_content() -> None:
    from lib.core.io import tensors_digest

    model = tiny_bert_mlm(0)
    state = model.state_dict()
    assert tensors_digest(state) == tensors_digest(tiny_bert_mlm(0).state_dict())
    changed = dict(state)
    changed[next(iter(state))] = state[next(iter(state))].clone().index_fill_(0, torch.tensor([0]), 0.5)
    assert tensors_digest(changed) != tensors_digest(state)
    assert tensors_digest({"a": torch.zeros(2)}) != tensors_digest({"a": torch.zeros(2, dtype=torch.float64)})


def test_reads_name_real_inputs_and_unread_inputs_are_not_needed() -> None:
    """`reads` (the experiments cache key) lists MethodInputs fields; methods reading nothing run on bare inputs."""
    names = {f.name for f in dataclasses.fields(MethodInputs)} - {"category", "seed"}
    for key, method in METHODS.items():
        assert set(method.reads) <= names, key
    bare = MethodInputs(category="TEL", attribution=torch.full((N_LAYERS, D_FF), float("nan")),
                        activations=torch.full((1, N_LAYERS, D_FF), float("nan")), cluster_labels=None, seed=0)
    for key, values in (("ftm", {}), ("random", {"k": 3})):
        model = tiny_bert_mlm(0)
        METHODS[key].run(model, FFNAdapter.for_model(model), bare, make_config(METHODS[key].Config, values))
