"""Tests for lib.core.editing: decay factors, decay-with-noise and zeroing on tiny models."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lib.core.adapter import FFNAdapter
from lib.core.editing import (DecayEdit, NeuronPatch, WeightDelta, apply_edit, decay_factors, decay_with_noise,
                              diff_edit, snapshot, zero_neurons)
from tests.tiny_models import ALL_TINY, D_FF, HIDDEN

# Raw state_dict layout per family, written independently of the adapter:
# (weight-name template, neuron axis of the stored weight).
LAYOUT = {
    "bert": ("bert.encoder.layer.{}.output.dense.weight", 1),
    "gpt2": ("transformer.h.{}.mlp.c_proj.weight", 0),  # Conv1D stores [d_ff, d_model]
    "gpt_neo": ("transformer.h.{}.mlp.c_proj.weight", 1),
    "llama": ("model.layers.{}.mlp.down_proj.weight", 1),
}
NEURONS = [(1, 36), (0, 0), (0, 17), (1, 3), (0, 5)]  # rank order, mixes layers


def _column(state: dict[str, Tensor], family: str, layer: int, neuron: int) -> Tensor:
    """The raw output-weight vector (d_model,) of one neuron, read from a state_dict."""
    name, axis = LAYOUT[family]
    weight = state[name.format(layer)]
    return weight[neuron] if axis == 0 else weight[:, neuron]


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """Deep copy of a model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["one_minus_pow", "pow"])
def test_decay_factors_match_formula(mode: str) -> None:
    alpha = 0.9
    got = decay_factors(4, alpha, mode)
    want = [1 - alpha**r if mode == "one_minus_pow" else alpha**r for r in (1, 2, 3, 4)]
    assert got.shape == (4,)
    assert torch.allclose(got, torch.tensor(want, dtype=got.dtype), atol=1e-12)
    if mode == "one_minus_pow":  # top-ranked neuron decays hardest
        assert bool((got[1:] > got[:-1]).all())


def test_decay_factors_edges_and_errors() -> None:
    assert torch.equal(decay_factors(3, 1.0), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(decay_factors(3, 1.0, "pow"), torch.ones(3, dtype=torch.float64))
    assert decay_factors(0, 0.5).shape == (0,)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            decay_factors(3, bad)
    with pytest.raises(ValueError, match="mode"):
        decay_factors(3, 0.5, "linear")


@pytest.mark.parametrize("family", ["bert", "gpt2", "gpt_neo", "llama"])
def test_decay_with_noise_edits_exactly_the_selected_columns(family: str) -> None:
    model = ALL_TINY[family](0)
    before = _snapshot(model)
    alpha, sigma, seed = 0.9, 0.05, 123
    stats = decay_with_noise(FFNAdapter.for_model(model), NEURONS, alpha, sigma,
                             torch.Generator().manual_seed(seed), "one_minus_pow")
    expected = {k: v.clone() for k, v in before.items()}
    eps = torch.randn((len(NEURONS), HIDDEN), generator=torch.Generator().manual_seed(seed)) * sigma
    delta = decay_factors(len(NEURONS), alpha).float()
    for rank, (layer, neuron) in enumerate(NEURONS):
        col = _column(expected, family, layer, neuron)
        col.copy_(delta[rank] * col + eps[rank])
    after = model.state_dict()
    assert after.keys() == expected.keys()
    for name in expected:
        assert torch.equal(after[name], expected[name]), name
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert sorted(changed) == sorted({LAYOUT[family][0].format(l) for l, _ in NEURONS})
    total = sum(p.numel() for p in model.parameters())
    assert (stats.n_neurons, stats.n_weights_edited) == (5, 5 * HIDDEN)
    assert stats.fraction_weights_edited == pytest.approx(5 * HIDDEN / total)


def test_decay_with_noise_same_seed_same_model_other_seed_differs() -> None:
    states = []
    for seed in (7, 7, 8):
        model = ALL_TINY["gpt2"](0)
        decay_with_noise(FFNAdapter.for_model(model), NEURONS, 0.99, 0.1,
                         torch.Generator().manual_seed(seed), "pow")
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_decay_with_noise_sigma_zero_is_pure_decay() -> None:
    model = ALL_TINY["bert"](0)
    before = _snapshot(model)
    decay_with_noise(FFNAdapter.for_model(model), [(0, 4)], 0.5, 0.0,
                     torch.Generator().manual_seed(0), "pow")
    col_before = _column(before, "bert", 0, 4)
    assert torch.equal(_column(model.state_dict(), "bert", 0, 4), 0.5 * col_before)


def test_decay_with_noise_rejects_bad_input() -> None:
    adapter = FFNAdapter.for_model(ALL_TINY["bert"](0))
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="sigma"):
        decay_with_noise(adapter, [(0, 1)], 0.9, -0.1, gen)
    with pytest.raises(ValueError, match="duplicate"):
        decay_with_noise(adapter, [(0, 1), (1, 2), (0, 1)], 0.9, 0.1, gen)
    with pytest.raises(ValueError, match="out of range"):
        decay_with_noise(adapter, [(0, D_FF)], 0.9, 0.1, gen)
    with pytest.raises(ValueError, match="out of range"):
        decay_with_noise(adapter, [(2, 0)], 0.9, 0.1, gen)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_zero_neurons_only_zeroes_selected(family: str) -> None:
    model = ALL_TINY[family](1)
    before = _snapshot(model)
    stats = zero_neurons(FFNAdapter.for_model(model), [(0, 2), (1, 30)])
    after = model.state_dict()
    for layer, neuron in [(0, 2), (1, 30)]:
        assert torch.equal(_column(after, family, layer, neuron), torch.zeros(HIDDEN))
        _column(before, family, layer, neuron).zero_()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert stats.n_weights_edited == 2 * HIDDEN


@pytest.mark.parametrize("family", sorted(LAYOUT))
def test_diff_edit_records_a_neuron_edit_that_replays_and_reverts(family: str) -> None:
    """diff_edit's NeuronPatch holds exactly the changed columns (raw layout), and replays / reverts bit for bit."""
    model = ALL_TINY[family](seed=2)
    before, raw = snapshot(model), _snapshot(model)
    decay_with_noise(FFNAdapter.for_model(model), NEURONS, 0.9, 0.1, torch.Generator().manual_seed(0))
    edit, changed, total = diff_edit(before, model, "neurons")
    assert isinstance(edit, NeuronPatch) and set(edit.neurons) == set(NEURONS)
    assert changed == len(NEURONS) * HIDDEN and total == sum(p.numel() for p in model.parameters())
    for patch in edit.layers:
        for row, neuron in enumerate(patch.neurons.tolist()):
            assert torch.equal(patch.old[row], _column(raw, family, patch.layer, neuron))
            assert torch.equal(patch.new[row], _column(model.state_dict(), family, patch.layer, neuron))
    edited = _snapshot(model)
    fresh = ALL_TINY[family](seed=2)
    apply_edit(fresh, edit)
    assert all(torch.equal(v, edited[k]) for k, v in fresh.state_dict().items())
    apply_edit(fresh, edit, revert=True)
    assert all(torch.equal(v, raw[k]) for k, v in fresh.state_dict().items())


def test_diff_edit_refuses_a_neuron_edit_that_touched_anything_else() -> None:
    model = ALL_TINY["bert"](seed=0)
    before = snapshot(model)
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight[0, 0] += 1.0  # an up-projection weight
    with pytest.raises(ValueError, match="neuron-level edit changed.*intermediate"):
        diff_edit(before, model, "neurons")
    edit, changed, _ = diff_edit(before, model, "weights")
    assert isinstance(edit, WeightDelta) and changed == 1
    assert list(edit.new) == ["bert.encoder.layer.0.intermediate.dense.weight"]
    with pytest.raises(ValueError, match="edit kind 'columns' unknown"):
        diff_edit(before, model, "columns")


def test_diff_edit_records_a_bias_change_and_no_change() -> None:
    model = ALL_TINY["gpt2"](seed=0)
    before = snapshot(model)
    assert diff_edit(before, model, "neurons")[0] == NeuronPatch(())
    adapter = FFNAdapter.for_model(model)
    with torch.no_grad():
        adapter.down_proj_bias(1).add_(0.5)
    edit, changed, _ = diff_edit(before, model, "neurons")
    assert changed == HIDDEN and edit.neurons == () and [p.layer for p in edit.layers] == [1]
    assert torch.equal(edit.layers[0].old_bias + 0.5, edit.layers[0].new_bias)


def test_decay_edit_config_validation() -> None:
    assert DecayEdit() == DecayEdit(k=300, decay_mode="one_minus_pow", alpha=0.99, sigma=0.05)
    for bad in (dict(k=0), dict(decay_mode="linear"), dict(alpha=1.5), dict(sigma=-0.1)):
        with pytest.raises(ValueError):
            DecayEdit(**bad)
