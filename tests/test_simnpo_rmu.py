"""SimNPO and RMU on tiny models of both families: their losses, what they may change, and that they unlearn."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from lib.core.adapter import FFNAdapter
from lib.families.causal import CausalFamily, of
from lib.methods import Inputs, rmu, simnpo, unlearn
from tests.tiny_models import memorise_all, tiny_gpt2, tiny_llama

FORGET = [[17, 42, 63, 8, 91, 33, 55, 2], [70, 12, 29, 84, 46, 5, 77, 2]]
RETAIN = [[5, 6, 7, 8, 9, 10, 2], [20, 21, 22, 23, 24, 25, 26, 2], [40, 41, 43, 44, 45, 2]]
FAMILY = CausalFamily(SimpleNamespace(pad_token_id=0), batch_size=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def memorised(build) -> torch.nn.Module:
    """A tiny causal LM (float64: no CPU-kernel edge) that predicts every token of FORGET + RETAIN."""
    return memorise_all(build().double(), FORGET + RETAIN)


def inputs(stop: float | None = 0.5) -> Inputs:
    """The forget and retain sets as causal inputs."""
    return Inputs(family=FAMILY, forget=of(FORGET), retain=of(RETAIN), stop=stop, seed=0)


# ---------------------------------------------------------------- SimNPO

def test_simnpo_loss_is_the_length_normalised_formula() -> None:
    model = memorised(tiny_gpt2)
    lengths = simnpo.token_counts(inputs())
    assert lengths.tolist() == [7.0, 7.0]
    with torch.no_grad():
        per_token = FAMILY.sample_nll(model, of(FORGET), [0, 1]).float() / lengths
        loss = simnpo.simnpo_sum(model, inputs(), lengths, [0, 1], beta=2.5, margin=0.3)
        expected = -(2 / 2.5) * F.logsigmoid(2.5 * (per_token - 0.3)).sum()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        # at the margin each sample contributes (2/β)·log 2, whatever its length
        at_margin = simnpo.simnpo_sum(model, inputs(), lengths, [0], beta=2.5, margin=float(per_token[0]))
        assert at_margin.item() == pytest.approx((2 / 2.5) * math.log(2), rel=1e-5)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_simnpo_unlearns_a_memorised_forget_set(build) -> None:
    model = memorised(build)
    assert (FAMILY.memorization(model, of(FORGET)) == 1).all()
    outcome = unlearn("simnpo", model, inputs(), simnpo.Config(learning_rate=3e-3, batch_size=2, max_steps=60))
    assert outcome.report.reached and 0 < outcome.report.steps <= 60
    assert (FAMILY.memorization(model, of(FORGET)) <= 0.5).all()


def test_simnpo_config_rejects_bad_values() -> None:
    for bad in ({"beta": 0.0}, {"learning_rate": -1.0}, {"batch_size": 0}, {"max_steps": 0}, {"retain_weight": -0.5},
                {"margin": float("nan")}, {"margin": True}):
        with pytest.raises(ValueError):
            simnpo.Config(**bad)
    with pytest.raises(ValueError, match="retain"):
        simnpo.run(memorised(tiny_gpt2), Inputs(family=FAMILY, forget=of(FORGET)), simnpo.Config(retain_weight=1.0))


# ---------------------------------------------------------------- RMU

def test_rmu_changes_only_the_chosen_down_projections() -> None:
    model = memorised(tiny_llama)
    original = copy.deepcopy(model)
    adapter = FFNAdapter.for_model(model)
    cfg = rmu.Config(layer=1, update_layers=1, learning_rate=1e-2, batch_size=2, max_steps=5, alpha=1.0)
    outcome = unlearn("rmu", model, inputs(stop=None), cfg)
    trained = set(adapter.weight_names(1))
    after, before = model.state_dict(), original.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k not in trained)
    assert all(not torch.equal(after[k], before[k]) for k in trained)
    assert outcome.report.trainable == sum(model.get_parameter(n).numel() for n in trained)
    assert outcome.report.details["trained_layers"] == [1] and outcome.report.steps == 5


def test_rmu_misdirects_forget_states_and_keeps_retain_states() -> None:
    model = memorised(tiny_llama)
    adapter = FFNAdapter.for_model(model)
    block = adapter.block(1)
    cfg = rmu.Config(layer=1, update_layers=2, learning_rate=1e-2, batch_size=2, max_steps=40, alpha=10.0)
    before_f = torch.cat(rmu.frozen_states(model, inputs(), block, of(FORGET), 2))
    before_r = torch.cat(rmu.frozen_states(model, inputs(), block, of(RETAIN), 2))
    outcome = unlearn("rmu", model, inputs(stop=None), cfg)
    target = outcome.report.details["steering"] * rmu.random_direction(before_f.shape[-1], 0, before_f.device)
    after_f = torch.cat(rmu.frozen_states(model, inputs(), block, of(FORGET), 2))
    after_r = torch.cat(rmu.frozen_states(model, inputs(), block, of(RETAIN), 2))
    assert outcome.report.details["steering"] == pytest.approx(float(before_f.norm(dim=-1).mean()))
    # forget states move at least halfway to the target; retain states move less than a quarter as far as forget's
    assert (after_f - target).norm() < 0.5 * (before_f - target).norm()
    assert (after_r - before_r).norm() < 0.25 * (after_f - before_f).norm()


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_rmu_unlearns_a_memorised_forget_set(build) -> None:
    model = memorised(build)
    cfg = rmu.Config(layer=1, update_layers=2, learning_rate=3e-2, batch_size=2, max_steps=60, alpha=1.0)
    outcome = unlearn("rmu", model, inputs(), cfg)
    assert outcome.report.reached and (FAMILY.memorization(model, of(FORGET)) <= 0.5).all()


def test_rmu_rejects_a_layer_outside_the_model_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"rmu layer=5; allowed: 0\.\.1"):
        rmu.run(memorised(tiny_gpt2), inputs(), rmu.Config(layer=5))
    for bad in ({"layer": -1}, {"update_layers": 0}, {"steering": 0.0}, {"alpha": -1.0}, {"max_steps": 0}):
        with pytest.raises(ValueError):
            rmu.Config(**bad)
    with pytest.raises(ValueError, match="retain"):
        rmu.run(memorised(tiny_gpt2), Inputs(family=FAMILY, forget=of(FORGET)), rmu.Config())
