"""SIMU-GradDiff and the FO-/SO-GradDiff baselines on tiny float64 causal LMs."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.core.ig import cap_targets
from lib.families.causal import CausalFamily, of, pad, token_nll
from lib.methods import Inputs, fo_graddiff, graddiff, simu, so_graddiff, unlearn
from lib.methods.training import count_parameters, cycling_batches
from tests.tiny_models import tiny_gpt2, tiny_llama

FORGET = of([[11, 17, 42, 88, 23, 5, 61, 30, 77, 2], [64, 54, 9, 33, 71, 12, 95, 48, 2]], [(4, 8), (2, 5)])
RETAIN = of([[5, 6, 7, 8, 9, 10, 2], [20, 21, 22, 23, 24, 2], [40, 41, 43, 44, 45, 46, 47, 2]])
FAMILY = CausalFamily(SimpleNamespace(pad_token_id=0), batch_size=2)  # tiny models: no tokenizer, pad id 0
# MA can never be <= -1: the loops run their full epoch budget, so every run takes steps
INPUTS = Inputs(family=FAMILY, forget=FORGET, retain=RETAIN, stop=-1.0)
BUILDERS: dict[str, Callable[[], nn.Module]] = {"llama": tiny_llama, "gpt2": tiny_gpt2}
FAST = {"learning_rate": 1e-2, "batch_size": 2, "max_epochs": 2}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """One float64 tiny model per architecture (copy before editing)."""
    return {arch: build().double() for arch, build in BUILDERS.items()}


def _state(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every named parameter."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    """Names of `params` in `model`."""
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _direct_attribution(model: nn.Module, adapter: FFNAdapter, layer: int, steps: int) -> Tensor:
    """Eq. 2 by brute force for one layer: per target token and alpha, a hooked full forward and backward."""
    total = torch.zeros(adapter.d_ff, dtype=torch.float64)
    for ids, (start, end) in zip(FORGET.ids, FORGET.spans):
        for t in range(start, end):
            prefix = torch.tensor([ids[:t]])
            with torch.no_grad(), adapter.capture([layer]) as store:
                model(input_ids=prefix)
            clean = store[layer][0, t - 1]  # beta: (d_ff,)
            for alpha in torch.linspace(0, 1, steps, dtype=torch.float64):
                x = (alpha * clean).requires_grad_(True)

                def inject(_layer: int, acts: Tensor, x: Tensor = x) -> Tensor:
                    """Put alpha * beta at the scored position."""
                    return torch.cat([acts[:, : t - 1], x[None, None], acts[:, t:]], dim=1)

                with adapter.patch(inject, [layer]):
                    logits = model(input_ids=prefix).logits[0, t - 1]
                nll = -torch.log_softmax(logits, -1)[ids[t]]
                (grad,) = torch.autograd.grad(nll, x)
                total += clean * grad / steps
    return total


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_attribution_matches_direct_computation(models: dict[str, nn.Module], arch: str) -> None:
    """simu.attribution equals (1/m) sum_j sum_i beta * dNLL/da computed row by row with hooks."""
    model = models[arch]
    adapter = FFNAdapter.for_model(model)
    cfg = simu.Config(steps=3)
    att = simu.attribution(model, adapter, FAMILY, FORGET, cfg)
    assert att.shape == (adapter.n_layers, adapter.d_ff)
    for layer in range(adapter.n_layers):
        assert torch.allclose(att[layer], _direct_attribution(model, adapter, layer, 3), rtol=1e-9, atol=1e-12)


def test_cap_targets_keeps_evenly_spaced_rows() -> None:
    """max_targets keeps at most k rows per sample, first and last target token included."""
    rows = FAMILY.target_rows(of([list(range(3, 13))], [(2, 9)]), "span")  # 7 targets: tokens 2..8
    kept = cap_targets(rows, 3)
    assert kept.positions.tolist() == [1, 4, 7]
    assert cap_targets(rows, None) is rows and cap_targets(rows, 10).positions.numel() == 7


def test_threshold_selection_on_hand_made_scores() -> None:
    """Critical iff score > t * layer max; a layer whose max <= 0 has none."""
    scores = torch.tensor([[1.0, 0.2, 0.5, -3.0, 0.3], [-1.0, -0.5, -2.0, -0.1, -0.2], [0.0] * 5,
                           [0.0, 2.0, 0.7, 0.6, 0.61]])
    got = simu.critical_mask(scores, 0.3)
    assert got.tolist() == [[True, False, True, False, False], [False] * 5, [False] * 5,
                            [False, True, True, False, True]]
    assert not simu.critical_mask(scores, 1.0).any()  # strict: nothing exceeds the max itself


def test_forget_only_is_dual_minus_retain_critical(models: dict[str, nn.Module]) -> None:
    """forget_only = dual minus the retain set's critical neurons; a subset of dual; sign flips the scores."""
    model = models["llama"]
    adapter = FFNAdapter.for_model(model)
    dual = simu.critical_neurons(model, adapter, INPUTS, simu.Config(steps=2))
    only = simu.critical_neurons(model, adapter, INPUTS, simu.Config(steps=2, mask="forget_only"))
    retain = simu.critical_mask(-simu.attribution(model, adapter, FAMILY, RETAIN, simu.Config(steps=2)), 0.3)
    assert dual.any() and not (only & ~dual).any()
    assert torch.equal(only, dual & ~retain)
    loss_sign = simu.critical_neurons(model, adapter, INPUTS, simu.Config(steps=2, sign="loss"))
    att = simu.attribution(model, adapter, FAMILY, FORGET, simu.Config(steps=2))
    assert torch.equal(loss_sign, simu.critical_mask(att, 0.3)) and torch.equal(dual, simu.critical_mask(-att, 0.3))


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_simu_changes_only_attention_and_critical_columns(models: dict[str, nn.Module], arch: str) -> None:
    """Frozen parameters and non-critical down-proj columns stay bit-identical; critical ones and attention move."""
    model = copy.deepcopy(models[arch])
    adapter = FFNAdapter.for_model(model)
    cfg = simu.Config(steps=2, **FAST)
    critical = simu.critical_neurons(model, adapter, INPUTS, cfg)
    assert critical.any() and not critical.all()
    before, old_cols = _state(model), [adapter.get_columns(i, torch.arange(adapter.d_ff)) for i in range(2)]
    report = simu.run(model, INPUTS, cfg)
    attention = _names(model, graddiff.attention_parameters(adapter))
    down = _names(model, graddiff.down_weights(adapter))
    after = _state(model)
    assert report.steps == 2 and not report.reached and report.details["mask"] == "dual"
    json.dumps(report.details)  # plain floats / lists only
    assert report.details["critical_per_layer"] == critical.sum(1).tolist()
    assert report.trainable == sum(after[n].numel() for n in attention) + int(critical.sum()) * adapter.d_model
    assert all(torch.equal(before[n], after[n]) for n in after if n not in attention | down)
    assert any(not torch.equal(before[n], after[n]) for n in attention)
    for layer in range(adapter.n_layers):
        cols = adapter.get_columns(layer, torch.arange(adapter.d_ff))  # (d_ff, d_model), any weight layout
        assert torch.equal(cols[~critical[layer]], old_cols[layer][~critical[layer]])
        if critical[layer].any():
            assert not torch.equal(cols[critical[layer]], old_cols[layer][critical[layer]])
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_fo_graddiff_changes_every_parameter(models: dict[str, nn.Module]) -> None:
    """AdamW on all floating parameters: every tensor moves."""
    model = copy.deepcopy(models["llama"])
    before = _state(model)
    outcome = unlearn("fo_graddiff", model, INPUTS, fo_graddiff.Config(**FAST))
    after = _state(model)
    report = outcome.report
    assert report.steps == 2 and report.trainable == outcome.total == count_parameters(model)
    assert all(not torch.equal(before[n], after[n]) for n in after)
    assert set(outcome.edit.new) == set(after)  # the WeightDelta holds every tensor


def test_so_graddiff_freezes_embeddings_norms_and_up_projections(models: dict[str, nn.Module]) -> None:
    """Sophia on attention + every down-proj weight; embeddings, norms, gate/up projections bit-identical."""
    model = copy.deepcopy(models["llama"])
    adapter = FFNAdapter.for_model(model)
    before = _state(model)
    report = so_graddiff.run(model, INPUTS, so_graddiff.Config(**FAST))
    after = _state(model)
    trainable = _names(model, graddiff.attention_parameters(adapter) + graddiff.down_weights(adapter))
    assert report.steps == 2 and report.details["critical_total"] == adapter.neuron_count()
    frozen = [n for n in after if n not in trainable]
    assert all(any(word in n for n in frozen) for word in ("embed", "norm", "up_proj", "gate_proj"))
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trainable)


@pytest.mark.parametrize("method", [simu, fo_graddiff, so_graddiff], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("retain", [None, of([])])
def test_graddiff_needs_a_retain_set(models: dict[str, nn.Module], method, retain) -> None:
    """No retain set (or an empty one): ValueError, model untouched."""
    model = copy.deepcopy(models["llama"])
    before = _state(model)
    inputs = replace(INPUTS, retain=retain)
    with pytest.raises(ValueError, match="retain"):
        method.run(model, inputs, method.Config(**FAST))
    assert all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


def _mean_nll(model: nn.Module, seqs, index: list[int]) -> Tensor:
    """Mean token NLL of rows `index`, computed in one padded batch."""
    nll, valid = token_nll(model, *pad([seqs.ids[i] for i in index], 0))
    return nll.sum() / valid.sum()


def test_graddiff_loss_is_minus_forget_plus_lam_retain(models: dict[str, nn.Module]) -> None:
    """One step's loss and gradient equal those of -NLL_f + lam * NLL_r on the same batches (micro-batch 1)."""
    model = copy.deepcopy(models["llama"])
    lam, size, seed = 0.7, 2, 5
    inputs = replace(INPUTS, family=CausalFamily(FAMILY.tokenizer, batch_size=1), seed=seed)
    f_idx, r_idx = next(cycling_batches(2, size, seed)), next(cycling_batches(3, size, seed + 1))
    direct = -_mean_nll(model, FORGET, f_idx) + lam * _mean_nll(model, RETAIN, r_idx)
    weight = model.model.layers[0].mlp.down_proj.weight
    (expected_grad,) = torch.autograd.grad(direct, weight)
    loss = graddiff.step_loss_fn(model, inputs, lam, size)(0)
    assert loss == pytest.approx(float(direct.detach()), rel=1e-12)
    assert torch.allclose(weight.grad, expected_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs", [{"threshold": 0.0}, {"threshold": 1.5}, {"sign": "up"}, {"mask": "retain"},
                                    {"max_targets": 0}, {"steps": 1}, {"grid": "trapezoid"}, {"lam": 0.0},
                                    {"gamma": -1.0}, {"betas": (0.9, 1.0)}, {"max_epochs": 0}])
def test_simu_config_rejects_bad_values(kwargs: dict) -> None:
    """Every SIMU field is validated."""
    with pytest.raises(ValueError, match=next(iter(kwargs)).replace("learning_rate", "lr")):
        simu.Config(**kwargs)


def test_fo_config_rejects_bad_values() -> None:
    """FO-GradDiff validates its fields."""
    for kwargs in ({"weight_decay": -1.0}, {"learning_rate": 0.0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            fo_graddiff.Config(**kwargs)
