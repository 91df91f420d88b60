"""Tests for lib.methods.depn: per-text threshold, frequency aggregation, tie-break, edit."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from lib.core.adapter import FFNAdapter
from lib.core.editing import NeuronPatch
from lib.core.ig import IGConfig, integrated_gradients
from lib.families.causal import CausalFamily
from lib.families.masked import MaskedFamily
from lib.methods import Inputs, Stats, depn, unlearn
from tests.tiny_models import tiny_bert_mlm, tiny_gpt2

pytestmark = pytest.mark.usefixtures("one_thread")


def _hand_scores() -> tuple[torch.Tensor, torch.Tensor]:
    """5 rows, 3 texts (records 5, 2, 9), L=2, d_ff=5; see test comments for the sums."""
    rows = torch.zeros(5, 2, 5)
    # text 5 (rows 0, 1): summed layer0 [10, .5, 2, 0, 0], layer1 [0, 1.5, 0, 0, -3]; max 10
    rows[0, 0] = torch.tensor([6.0, 0.5, 1.0, 0, 0])
    rows[0, 1] = torch.tensor([0, 0.6, 0, 0, -3.0])
    rows[1, 0] = torch.tensor([4.0, 0, 1.0, 0, 0])
    rows[1, 1] = torch.tensor([0, 0.9, 0, 0, 0])  # (1, 1) passes only once rows are summed
    # text 2 (row 2): layer0 [0, 0, 3, 0, 0], layer1 [0, 0, 0, 20, 0]; max 20
    rows[2, 0, 2], rows[2, 1, 3] = 3.0, 20.0
    # text 9 (rows 3, 4): layer0 [1, 0, 0, 0, .2], layer1 [0, 5, 0, 0, 0]; max 5
    rows[3, 0, 0], rows[3, 0, 4], rows[4, 1, 1] = 1.0, 0.2, 5.0
    return rows, torch.tensor([5, 5, 2, 9, 9])


def test_select_frequency_then_summed_score() -> None:
    """Kept: (0,0) x2 sum 11, (1,1) x2 sum 6.5, (0,2) x2 sum 5, (1,3) x1 sum 20."""
    scores, index = _hand_scores()
    got = depn.select_depn(scores, index, depn.Config(k=4))
    assert got == ((0, 0), (1, 1), (0, 2), (1, 3))
    assert depn.select_depn(scores, index, depn.Config(k=2)) == ((0, 0), (1, 1))


def test_select_sum_aggregate_and_threshold() -> None:
    """aggregate='sum' ranks by summed score; a lower threshold keeps (0, 1) of text 5."""
    scores, index = _hand_scores()
    assert depn.select_depn(scores, index, depn.Config(k=4, aggregate="sum")) == ((1, 3), (0, 0), (1, 1), (0, 2))
    low = depn.select_depn(scores, index, depn.Config(k=5, per_text_threshold=0.05))
    assert low[-1] == (0, 1) and set(low[:4]) == {(0, 0), (1, 1), (0, 2), (1, 3)}


def test_select_exact_tie_breaks_by_position() -> None:
    """Equal frequency and equal summed score fall back to ascending (layer, neuron)."""
    scores = torch.zeros(2, 2, 3)
    scores[0, 1, 0], scores[0, 0, 2], scores[1, 0, 2], scores[1, 1, 0] = 1.0, 1.0, 1.0, 1.0
    got = depn.select_depn(scores, torch.tensor([0, 1]), depn.Config(k=2))
    assert got == ((0, 2), (1, 0))


def test_select_rejects_k_above_available() -> None:
    """K larger than the neurons kept by the threshold raises naming K."""
    scores, index = _hand_scores()
    with pytest.raises(ValueError, match="k=5 exceeds the 4 neurons"):
        depn.select_depn(scores, index, depn.Config(k=5))
    with pytest.raises(ValueError, match="record_index shape"):
        depn.select_depn(scores, index[:3], depn.Config(k=1))
    with pytest.raises(ValueError, match="aggregate='mean'"):
        depn.Config(aggregate="mean")


def _rows(n: int = 4) -> SimpleNamespace:
    """Random rows of two records (two masked variants each)."""
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 101, (n, 8), generator=gen)
    gold = torch.randint(5, 101, (n,), generator=gen)
    return SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids), positions=torch.tensor([3, 4, 2, 5]),
                           gold_ids=gold, record_index=torch.tensor([0, 0, 1, 1]))


def _family(model: torch.nn.Module):
    """The family view of a tiny model (DEPN reads no tokenizer: a stand-in with pad id 0 will do)."""
    tokenizer = SimpleNamespace(pad_token_id=0)
    return CausalFamily(tokenizer) if FFNAdapter.for_model(model).family == "causal" else MaskedFamily(tokenizer)


def _inputs(model: torch.nn.Module, rows: SimpleNamespace, stats: Stats = Stats()) -> Inputs:
    """Inputs with the given statistics (DEPN reads only stats.ig and stats.ig_owner)."""
    return Inputs(family=_family(model), forget=rows, stats=stats, seed=0)


@pytest.mark.parametrize("factory,neuron_axis", [(tiny_bert_mlm, 1), (tiny_gpt2, 0)])
def test_run_zeroes_exactly_selected_columns(factory, neuron_axis: int) -> None:
    """Selected output-weight columns become 0; every other weight is bit-identical."""
    model = factory(seed=3)
    adapter, rows = FFNAdapter.for_model(model), _rows()
    ig = integrated_gradients(model, adapter, rows, IGConfig(steps=2))
    cfg = depn.Config(k=6)
    expected_neurons = depn.select_depn(ig, rows.record_index, cfg)
    expected = copy.deepcopy(model.state_dict())
    for layer, neuron in expected_neurons:
        name = adapter.weight_names(layer)[0]
        expected[name].select(neuron_axis, neuron).zero_()  # layout written out, not via adapter
    outcome = unlearn("depn", model, _inputs(model, rows, Stats(ig=ig, ig_owner=rows.record_index)), cfg)
    report = outcome.report
    assert report.neurons == expected_neurons and len(set(report.neurons)) == 6
    assert report.method == "depn" and report.trainable == 6 * adapter.d_model
    assert isinstance(outcome.edit, NeuronPatch) and set(outcome.edit.neurons) == set(expected_neurons)
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in expected.items())
    assert any(not torch.equal(value, factory(seed=3).state_dict()[key]) for key, value in after.items())


def test_run_reads_inputs_and_requires_ig() -> None:
    """Without IG, run raises; stats.ig with stats.ig_owner (each row's text) is read when present."""
    model = tiny_bert_mlm()
    adapter = FFNAdapter.for_model(model)
    with pytest.raises(ValueError, match="depn needs stats.ig"):
        depn.run(model, _inputs(model, _rows()), depn.Config(k=1))
    scores = torch.zeros(1, adapter.n_layers, adapter.d_ff)
    scores[0, 1, 7] = 2.0
    report = depn.run(model, _inputs(model, _rows(), Stats(ig=scores, ig_owner=torch.tensor([0]))),
                      depn.Config(k=1))
    assert report.neurons == ((1, 7),)
    assert float(adapter.get_columns(1, torch.tensor([7])).abs().max()) == 0.0
    with pytest.raises(ValueError, match="ig shape"):
        depn.run(model, _inputs(model, _rows(), Stats(ig=scores[:, :, :5], ig_owner=torch.tensor([0]))),
                 depn.Config(k=1))
