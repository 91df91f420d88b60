"""A causal track's stop rule for fixed-budget neuron methods (lib.methods.budget): K doubles until the rule holds.

On a tiny LLaMA (2 layers, d_ff 37: 74 neurons) that memorised three sequences in its FFNs, DEPN (IG statistics
of the span tokens) and Random-K grow K from their own k; every try but the kept one is reverted bit for bit.
"""
from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.editing import NeuronPatch, apply_edit
from lib.core.ig import IGConfig, integrated_gradients
from lib.families.causal import CausalFamily, of
from lib.methods import Inputs, Stats, get, unlearn
from lib.methods.budget import budgeted, unlearn_to_stop
from tests.tiny_models import D_FF, N_LAYERS, memorise_ffn, tiny_llama

PAD = 0
FAMILY = CausalFamily(SimpleNamespace(pad_token_id=PAD), batch_size=4)
FORGET = of([[11, 17, 42, 88, 23, 5, 61, 30, 77, 2], [64, 54, 9, 33, 71, 12, 95, 48, 2],
             [37, 81, 26, 58, 14, 99, 45, 70, 2]], [(2, 9), (2, 8), (2, 8)])
TOTAL = N_LAYERS * D_FF
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run fastest single-threaded


@pytest.fixture(scope="module")
def memorised() -> nn.Module:
    """The tiny LLaMA (float64) with FORGET memorised in its FFNs; copy it before editing."""
    return memorise_ffn(tiny_llama(seed=0).double(), FORGET, PAD)


def inputs(model: nn.Module, stop: float | None) -> Inputs:
    """FORGET with the IG of its span tokens (DEPN's statistics) and the stop threshold `stop`."""
    rows = FAMILY.target_rows(FORGET, "span")
    ig = integrated_gradients(model, FFNAdapter.for_model(model), rows, IGConfig(steps=3))
    return Inputs(family=FAMILY, forget=FORGET, stats=Stats(ig=ig, ig_owner=rows.sample), stop=stop, seed=0)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    """Every state-dict entry bit-identical."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_budgeted_methods_are_the_neuron_methods_with_a_k() -> None:
    """SNKU, DEPN, GARE, Random-K and APNEAP have a budget; weight methods and NeuMuter / IG do not."""
    assert all(budgeted(m) for m in ("snku", "depn", "gare", "random", "apneap"))
    assert not any(budgeted(m) for m in ("ga", "npo", "neumuter", "ig", "ftm"))


def test_without_a_stop_rule_the_method_runs_once_at_its_k(memorised: nn.Module) -> None:
    """No stop threshold: exactly the plain run at cfg.k (same model bit for bit, no `reached`)."""
    a, b = copy.deepcopy(memorised), copy.deepcopy(memorised)
    cfg = get("depn").Config(k=6)
    grown = unlearn_to_stop("depn", a, inputs(a, None), cfg, k_max=64)
    plain = unlearn("depn", b, inputs(b, None), cfg)
    assert grown.report.reached is None and grown.report.strength == plain.report.strength == 6
    assert states_equal(a, b)


def test_k_doubles_until_the_forget_set_meets_the_rule(memorised: nn.Module) -> None:
    """DEPN (every neuron with positive IG a candidate) from k = 2: the first K whose forget MA is under the
    threshold is kept; the tries before it did not meet it and left no trace (the kept edit alone turns the
    input model into the result)."""
    model = copy.deepcopy(memorised)
    stop = 0.5
    cfg = get("depn").Config(k=2, per_text_threshold=0.0)
    outcome = unlearn_to_stop("depn", model, inputs(model, stop), cfg, k_max=TOTAL)
    history = outcome.report.details["history"]
    assert history["neurons"] == [min(2 * 2 ** i, TOTAL) for i in range(len(history["neurons"]))]
    assert outcome.report.reached and history["max_ma"][-1] <= stop
    assert all(worst > stop for worst in history["max_ma"][:-1])
    assert len(history["neurons"]) >= 2  # two neurons do not undo the memory of three sequences
    assert float(FAMILY.memorization(model, FORGET).max()) <= stop
    assert isinstance(outcome.edit, NeuronPatch) and len(outcome.edit.neurons) <= history["neurons"][-1]
    replay = copy.deepcopy(memorised)
    apply_edit(replay, outcome.edit)
    assert states_equal(replay, model)


def test_an_unreachable_rule_stops_at_k_max(memorised: nn.Module) -> None:
    """A threshold no model can meet: Random-K tries every K up to k_max and reports the rule not reached."""
    model = copy.deepcopy(memorised)
    cfg = get("random").Config(k=8, decay_mode="pow", alpha=0.5, sigma=0.0)  # every drawn column shrinks
    outcome = unlearn_to_stop("random", model, dataclasses.replace(inputs(model, None), stop=-1.0), cfg, k_max=40)
    assert outcome.report.details["history"]["neurons"] == [8, 16, 32, 40]
    assert outcome.report.reached is False and outcome.report.strength == 40 and outcome.report.steps == 4
    assert len(outcome.edit.neurons) == 40


def test_a_k_beyond_the_selection_keeps_the_previous_try(memorised: nn.Module) -> None:
    """DEPN keeps only the neurons over its per-text threshold: a K beyond them is refused, the try before it
    is the result (put back bit for bit), and the rule is reported not reached."""
    model = copy.deepcopy(memorised)
    outcome = unlearn_to_stop("depn", model, inputs(model, -1.0), get("depn").Config(k=4), k_max=TOTAL)
    history = outcome.report.details["history"]
    assert "exceeds" in history["refused"] and outcome.report.reached is False
    assert outcome.report.strength == history["neurons"][-1] < TOTAL
    replay = copy.deepcopy(memorised)
    apply_edit(replay, outcome.edit)
    assert states_equal(replay, model) and len(outcome.edit.neurons) == history["neurons"][-1]
