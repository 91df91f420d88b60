"""Quantization: round-to-nearest per-group rounding on every layer weight (GPT-2's transposed Conv1D included);
an edit far below the 4-bit step is undone by rounding, one several steps large survives."""
from __future__ import annotations

import copy

import pytest
import torch

from lib.attacks.quantize import edit_vs_step, fake_quantize, layer_weights, quantize
from lib.core.adapter import FFNAdapter
from tests.tiny_models import tiny_bert_mlm, tiny_gpt2, tiny_llama

MODELS = {"bert": tiny_bert_mlm, "gpt2": tiny_gpt2, "llama": tiny_llama}


def test_fake_quantize_rounds_groups_to_their_levels() -> None:
    w = torch.tensor([[0.7, -0.3, 0.1, 0.0], [1.0, 0.6, -1.0, 0.26]])
    q, step = fake_quantize(w, bits=2, group_size=2, input_axis=1)  # levels -1, 0, 1 times max|w| per group
    assert torch.equal(q, torch.tensor([[0.7, 0.0, 0.1, 0.0], [1.0, 1.0, -1.0, 0.0]]))
    assert torch.allclose(step, torch.tensor([[0.7, 0.7, 0.1, 0.1], [1.0, 1.0, 1.0, 1.0]]))
    qt, _ = fake_quantize(w.T.contiguous(), bits=2, group_size=2, input_axis=0)  # the transposed layout
    assert torch.equal(qt, q.T)
    with pytest.raises(ValueError, match="bits >= 2"):
        fake_quantize(w, bits=1, group_size=2, input_axis=1)


@pytest.mark.parametrize("arch", MODELS)
def test_quantize_rounds_every_layer_weight_and_nothing_else(arch: str) -> None:
    model = MODELS[arch]()
    layer = layer_weights(model)
    adapter = FFNAdapter.for_model(model)
    assert any(p is adapter.down_proj(0).weight for p in layer.values())  # the FFN weights neuron methods edit
    q8, r8 = quantize(model, bits=8)
    q4, r4 = quantize(model, bits=4)
    assert r8.tensors == r4.tensors == len(layer) and r4.median_step > 8 * r8.median_step
    for name, p in model.named_parameters():
        after = dict(q4.named_parameters())[name]
        if name in layer:
            assert not torch.equal(p, after) and (p - after).abs().max() < 0.5 * p.abs().max()
        else:
            assert torch.equal(p, after), name  # embeddings, norms, biases, LM head stay as they were


@pytest.mark.parametrize("arch", MODELS)
def test_an_edit_below_the_4_bit_step_is_undone_and_a_large_one_survives(arch: str) -> None:
    parent = MODELS[arch]()
    adapter = FFNAdapter.for_model(parent)
    neurons = torch.tensor([1, 4, 9])
    _, step = fake_quantize(adapter.down_proj(0).weight, 4, 32, adapter.spec.neuron_axis)
    steps = step.index_select(adapter.spec.neuron_axis, neurons)
    steps = steps.T if adapter.spec.neuron_axis == 1 else steps  # (k, d_model), as get_columns
    results = {}
    for name, size in (("small", 0.05), ("large", 3.0)):  # each weight moved by that many of its own steps
        edited = copy.deepcopy(parent)
        edit = FFNAdapter.for_model(edited)
        columns = edit.get_columns(0, neurons)
        edit.set_columns(0, neurons, columns + size * steps * torch.sign(columns))
        results[name] = edit_vs_step(parent, edited, bits=4)
        assert results[name]["changed_weights"] == 3 * adapter.d_model
    # most of a small edit rounds back to the parent's levels; what survives is mostly a group's largest weight,
    # which sets the group's scale (pure elementwise float ops: the same numbers on every CPU)
    assert results["small"]["median_delta_over_step"] < 0.2 and results["small"]["undone_fraction"] > 0.6
    assert results["large"]["median_delta_over_step"] > 1.0 and results["large"]["undone_fraction"] < 0.2


@pytest.mark.parametrize("arch", MODELS)
def test_the_grouped_summaries_are_the_per_weight_ones(arch: str) -> None:
    """quantize's median step (over groups weighted by their inputs) and edit_vs_step (on the groups) give what the
    per-weight tensors of fake_quantize give: torch.median of every weight's step, and of |delta| / step over the
    changed weights, with the share whose level is the parent's (tiny models' odd widths leave a partial group)."""
    parent = MODELS[arch]()
    edited = copy.deepcopy(parent)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in layer_weights(edited).values():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen) * (torch.rand(p.shape, generator=gen) < 0.3))
    axis = FFNAdapter.for_model(parent).spec.neuron_axis
    before, after = layer_weights(parent), layer_weights(edited)
    steps, ratios, same = [], [], []
    for name, old in before.items():
        q_old, step = fake_quantize(old, 4, 32, axis)
        q_new, step_new = fake_quantize(after[name], 4, 32, axis)
        changed = old != after[name]
        steps.append(step.flatten())
        ratios.append(((after[name] - old).abs() / step)[changed])
        same.append((torch.round(q_old / step) == torch.round(q_new / step_new))[changed])
    assert any(p.shape[1 - axis] % 32 for p in before.values())  # a partial group is covered
    assert quantize(parent, 4)[1].median_step == float(torch.cat(steps).median())
    got = edit_vs_step(parent, edited, 4)
    assert got["changed_weights"] == sum(len(r) for r in ratios) > 0
    assert got["median_delta_over_step"] == float(torch.cat(ratios).median())
    assert got["undone_fraction"] == pytest.approx(float(torch.cat(same).double().mean()), abs=1e-12)
