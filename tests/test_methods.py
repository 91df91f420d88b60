"""Tests for the method registry and contract, SNKU's run and the random-neuron control."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor
from transformers import AutoTokenizer, BertForMaskedLM

from lib.core.adapter import FFNAdapter
from lib.core.attribution import ffn_activations, grad_x_act
from lib.core.clustering import ClusterConfig, cluster_all_layers, cluster_layer
from lib.core.editing import NeuronPatch, WeightDelta, apply_edit, decay_factors
from lib.core.ig import IGConfig, integrated_gradients
from lib.core.params import ParamsError
from lib.data.records import SecretRecord
from lib.families.causal import CausalFamily
from lib.families.masked import MaskedFamily, secret_token_rows
from lib.methods import FAMILIES, KINDS, METHODS, Inputs, Report, Stats, get, make_config
from lib.methods import random as random_neurons
from lib.methods import snku, unlearn
from tasks.edit import counterpart_rows
from tests.tiny_models import D_FF, HIDDEN, N_LAYERS, save_tiny_bert_checkpoint, tiny_bert_mlm, tiny_gpt2

pytestmark = pytest.mark.usefixtures("one_thread")

STAND_IN = SimpleNamespace(pad_token_id=0)  # a tokenizer-like object for methods that read no tokenizer


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """Deep copy of a model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _family(model: torch.nn.Module):
    """The family of a tiny model, with the stand-in tokenizer."""
    return CausalFamily(STAND_IN) if FFNAdapter.for_model(model).family == "causal" else MaskedFamily(STAND_IN)


def _hand_stats() -> Stats:
    """Layer 0: clusters of 4 neurons; layer 1: singletons; attribution peaks in layer 1."""
    attribution = torch.full((N_LAYERS, D_FF), 0.01)
    attribution[0, 0:4] = torch.tensor([5.0, 4.0, 3.0, 2.0])  # cluster 0 of layer 0
    attribution[1, 10] = 10.0  # singleton cluster in layer 1
    attribution[1, 20] = 1.0
    labels = {0: np.arange(D_FF) // 4, 1: np.arange(D_FF)}
    acts = torch.zeros(3, N_LAYERS, D_FF)
    return Stats(attribution=attribution, activations=acts, clusters=labels)


def _hand_inputs(model: torch.nn.Module, seed: int = 0, stats: Stats | None = None) -> Inputs:
    """Inputs carrying the hand-made statistics (SNKU reads only those and the seed)."""
    return Inputs(family=_family(model), forget=None, stats=_hand_stats() if stats is None else stats, seed=seed)


def test_registry_and_get_error() -> None:
    assert {"ftm", "gare", "depn", "apneap", "snku", "random"} <= set(METHODS)
    assert len(set(METHODS.values())) == len(METHODS) and all(METHODS.values())  # distinct report labels
    modules = {p.stem for p in (Path(__file__).parents[1] / "lib/methods").glob("*.py") if "\ndef run(" in p.read_text()}
    assert modules == set(METHODS), "a module with run() but no label (or a label without run())"
    assert get("snku") is snku and get("random") is random_neurons
    for name in METHODS:
        method = get(name)
        assert method.__name__ == f"lib.methods.{name}"
        assert dataclasses.is_dataclass(method.Config) and method.Config.__dataclass_params__.frozen
        assert method.families and set(method.families) <= set(FAMILIES), name
        assert method.kind in KINDS, name
        assert callable(method.run), name
    assert list(METHODS) == sorted(METHODS)  # found, in file-name order
    with pytest.raises(ValueError, match=r"unknown method 'nope'; registered: apneap, depn, di, fo_graddiff"):
        get("nope")


def test_every_registered_method_has_its_params_section() -> None:
    """The registry key is also the params key: every method has a section in some track, every section is a
    registered method of that track's family, and every section builds its method's Config."""
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    tracks = {"masked": params["methods"], "causal": params["causal"]["methods"],
              "bench": params["benchmarks"]["methods"]}
    assert set().union(*tracks.values()) == set(METHODS)
    for track, sections in tracks.items():
        family = "masked" if track == "masked" else "causal"
        for name, section in sections.items():
            assert family in get(name).families, (track, name)
            for category in (("TEL", "NAME", "RANDOM") if track == "masked" else (None,)):
                assert isinstance(make_config(name, section, category), get(name).Config)


def test_make_config_and_validation() -> None:
    cfg = make_config("snku", {"k": 5, "top_m": 2, "rank_by": "sum"})
    assert (cfg.k, cfg.top_m, cfg.rank_by, cfg.hyb_alpha) == (5, 2, "sum", 0.5)
    with pytest.raises(ParamsError, match="threshold"):
        make_config("snku", {"threshold": 0.7})
    with pytest.raises(ParamsError, match="methods.snku.*rank_by"):
        make_config("snku", {"rank_by": "max"})
    with pytest.raises(ValueError, match="rank_by"):
        snku.Config(rank_by="max")
    with pytest.raises(ValueError, match="alpha"):
        random_neurons.Config(alpha=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 3  # type: ignore[misc]
    # a section's by_category values apply to their category only; overrides win over both
    section = {"k": 5, "alpha": 0.9, "by_category": {"TEL": {"alpha": 0.5, "sigma": 0.2}}}
    tel, name = make_config("snku", section, "TEL"), make_config("snku", section, "NAME")
    assert (tel.k, tel.alpha, tel.sigma) == (5, 0.5, 0.2) and (name.alpha, name.sigma) == (0.9, 0.05)
    assert make_config("snku", section, "TEL", overrides={"alpha": 0.7}).alpha == 0.7
    assert make_config("snku", section).alpha == 0.9  # no category: the section's own values


def test_cluster_all_layers_matches_per_layer() -> None:
    acts = torch.rand(12, N_LAYERS, D_FF, generator=torch.Generator().manual_seed(0))
    labels = cluster_all_layers(acts, ClusterConfig(threshold=0.3, linkage="average"))
    assert sorted(labels) == [0, 1]
    for layer in (0, 1):
        assert np.array_equal(labels[layer], cluster_layer(acts[:, layer].numpy(), 0.3, "average"))
    with pytest.raises(ValueError, match="N, L, d_ff"):
        cluster_all_layers(acts[0], ClusterConfig())


def test_snku_run_selects_and_edits_expected_neurons() -> None:
    model = tiny_bert_mlm(0)
    before = _snapshot(model)
    cfg = snku.Config(top_m=1, k=3, alpha=0.9, sigma=0.1, decay_mode="one_minus_pow")
    outcome = unlearn("snku", model, _hand_inputs(model, seed=5), cfg)
    report = outcome.report
    # HYB: layer 1 neuron 10 -> 10; layer 0 cluster 0 -> 14/2 = 7; M=1 is extended to reach K=3.
    assert report.neurons == ((1, 10), (0, 0), (0, 1))
    assert report.details["clusters_used"] == 2 and report.method == "snku"
    assert report.trainable == 3 * HIDDEN and 0 < outcome.changed <= 3 * HIDDEN
    assert isinstance(outcome.edit, NeuronPatch) and set(outcome.edit.neurons) == set(report.neurons)
    eps = torch.randn((3, HIDDEN), generator=torch.Generator().manual_seed(5)) * 0.1
    delta = decay_factors(3, 0.9).float()
    after = model.state_dict()
    for rank, (layer, neuron) in enumerate(report.neurons):
        name = f"bert.encoder.layer.{layer}.output.dense.weight"
        before[name][:, neuron] = delta[rank] * before[name][:, neuron] + eps[rank]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert report.selection_seconds >= 0 and report.edit_seconds >= 0


def test_snku_filter_drops_weak_clusters() -> None:
    model = tiny_bert_mlm(0)
    # Only layer-0 cluster 0 (AVG 3.5) and layer-1 neurons 10, 20 pass AVG >= 2% of max.
    with pytest.raises(ValueError, match="k=7 exceeds the 6"):
        snku.run(model, _hand_inputs(model), snku.Config(k=7))


def test_snku_same_seed_same_model_and_missing_labels() -> None:
    states = []
    for _ in range(2):
        model = tiny_gpt2(0)
        snku.run(model, _hand_inputs(model, seed=3), snku.Config(k=4))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    model = tiny_gpt2(0)
    no_labels = _hand_inputs(model, stats=dataclasses.replace(_hand_stats(), clusters=None))
    with pytest.raises(ValueError, match="snku needs stats.clusters"):
        snku.run(model, no_labels, snku.Config(k=1))
    no_attribution = _hand_inputs(model, stats=dataclasses.replace(_hand_stats(), attribution=None))
    with pytest.raises(ValueError, match="snku needs stats.attribution"):
        snku.run(model, no_attribution, snku.Config(k=1))


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
    outcome = unlearn("random", model, _hand_inputs(model, seed=9), cfg)
    report = outcome.report
    assert report.neurons == random_neurons.draw_neurons(N_LAYERS, D_FF, 6, seed=9)
    assert "clusters_used" not in report.details and report.method == "random"
    eps = torch.randn((6, HIDDEN), generator=torch.Generator().manual_seed(9)) * 0.05
    delta = decay_factors(6, 0.99, "pow").float()
    after = model.state_dict()
    for rank, (layer, neuron) in enumerate(report.neurons):
        name = f"transformer.h.{layer}.mlp.c_proj.weight"  # Conv1D: row = neuron
        before[name][neuron] = delta[rank] * before[name][neuron] + eps[rank]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ftm_leaves_every_weight_untouched() -> None:
    model = tiny_bert_mlm(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = unlearn("ftm", model, _hand_inputs(model, seed=1), get("ftm").Config())
    assert outcome.report.neurons == () and outcome.report.trainable == 0 and outcome.changed == 0
    assert outcome.edit == NeuronPatch(()) and outcome.report.method == "ftm"
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


def test_needs_name_real_inputs_and_unread_inputs_are_not_needed() -> None:
    """`needs` (the experiments cache key) lists Inputs / Stats fields; methods needing nothing run on bare inputs."""
    names = ({f.name for f in dataclasses.fields(Inputs)} - {"family", "stats", "stop", "seed"}) \
        | ({f.name for f in dataclasses.fields(Stats)} - {"seconds"})
    for key in METHODS:
        assert set(get(key).needs) <= names, key
    bare = Stats(attribution=torch.full((N_LAYERS, D_FF), float("nan")),
                 activations=torch.full((1, N_LAYERS, D_FF), float("nan")))
    needless = [key for key in METHODS if not get(key).needs]
    assert {"ftm", "random"} <= set(needless)
    for key in needless:
        model = tiny_bert_mlm(0)
        values = {"k": 3} if "k" in {f.name for f in dataclasses.fields(get(key).Config)} else {}
        outcome = unlearn(key, model, Inputs(family=MaskedFamily(STAND_IN), forget=None, stats=bare),
                          make_config(key, values))
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters()), key
        assert outcome.report.method == key


def test_every_method_runs_on_both_families_and_a_missing_family_is_refused() -> None:
    """Every registered method declares both families (issue 14); one that declared fewer is refused by
    unlearn() with a one-line error naming the families it runs on, before the model changes."""
    from types import ModuleType

    from lib.methods import FAMILIES, check_family

    assert {name: get(name).families for name in METHODS} == {name: FAMILIES for name in METHODS}
    masked_only = ModuleType("lib.methods.masked_only")
    masked_only.families = ("masked",)
    with pytest.raises(ValueError, match="method masked_only runs on masked LMs, not causal LMs"):
        check_family(masked_only, "causal")
    check_family(masked_only, "masked")


# ---------------------------------------------------------------- the method contract on a masked LM

FORGET = [
    SecretRecord("TEL-0001", "TEL", "my phone number is ", "4 1 7 2 9 3 8 0 6 5", " .", 5, False),
    SecretRecord("NAME-0001", "NAME", "please ask ", "kathleen smith", " about the deal .", 5, False),
    SecretRecord("RANDOM-0001", "RANDOM", "the passphrase is ", "ocean lamp fiddle", " , keep it .", 5, False),
]
RETAIN = [
    SecretRecord("TEL-0002", "TEL", "call me on ", "9 0 3 1 5 5 2 8 7 4", " today .", 3, False),
    SecretRecord("NAME-0002", "NAME", "a note for ", "robert jones", " from the desk .", 3, False),
]
BUILDABLE = {"forget", "retain", "neighbours", "records", "attribution", "activations", "clusters", "ig"}
# a few neurons / steps each, so every method runs in about a second on the tiny model
SMALL: dict[str, dict] = {
    "ftm": {}, "random": {"k": 3}, "gare": {"k": 3, "epochs": 1, "batch_size": 8, "learning_rate": 1e-2},
    "depn": {"k": 3, "per_text_threshold": 0.0}, "apneap": {"k": 3, "per_text_threshold": 0.0},
    "snku": {"k": 3, "top_m": 1, "min_avg_frac": 0.0}, "ga": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    "sga": {"max_steps": 2, "learning_rate": 1e-3}, "ta": {"finetune_steps": 2, "batch_size": 8, "finetune_lr": 1e-3},
    "ig": {"steps": 2, "n_start": 3, "n_max": 3},
    "simu": {"max_epochs": 1, "batch_size": 8, "steps": 2, "learning_rate": 1e-3, "threshold": 0.1},
    "fo_graddiff": {"max_epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
    "so_graddiff": {"max_epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
    "npo": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    "simnpo": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    "rmu": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    "di": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    "sp": {"ffn_fraction": 0.1, "max_tokens": 1000, "batch_size": 4, "max_steps": 2},
    "neumuter": {"lambda_kl": 0.1, "eta_l0": 0.0, "learning_rate": 1.0, "batch_size": 4, "passes": 2},
}
MASKED_METHODS = [name for name in METHODS if "masked" in get(name).families and set(get(name).needs) <= BUILDABLE]


@dataclasses.dataclass(frozen=True)
class Setup:
    """A tiny BERT (d_ff 37) with the MiniLM tokenizer and everything a masked method may read."""

    model: BertForMaskedLM
    inputs: Inputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The model, forget/retain rows of the records and the statistics the upstream stages would compute."""
    folder = save_tiny_bert_checkpoint(tmp_path_factory.mktemp("contract-bert"), seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForMaskedLM.from_pretrained(folder).eval()
    forget = secret_token_rows(tokenizer, FORGET, max_len=32)
    retain = secret_token_rows(tokenizer, RETAIN, max_len=32)
    adapter = FFNAdapter.for_model(model)
    args = (forget.input_ids, forget.attention_mask, forget.positions)
    activations = ffn_activations(model, adapter, *args)  # (R, L, d_ff)
    stats = Stats(attribution=grad_x_act(model, adapter, *args, forget.gold_ids), activations=activations,
                  clusters=cluster_all_layers(activations, ClusterConfig()),
                  ig=integrated_gradients(model, adapter, forget, IGConfig(steps=2)), ig_owner=forget.record_index)
    inputs = Inputs(family=MaskedFamily(tokenizer, batch_size=8, max_len=32), forget=forget, retain=retain,
                    neighbours=counterpart_rows(tokenizer, FORGET, forget, seed=0, max_len=32),
                    records=tuple(FORGET), stats=stats, seed=1)
    return Setup(model, inputs)


def _columns_and_biases_outside(patch: NeuronPatch, adapter: FFNAdapter) -> tuple[set[str], dict[str, Tensor]]:
    """The names of the patched biases; down-projection weight name -> mask of its patched columns."""
    masks, biases = {}, set()
    by_layer = {p.layer: p for p in patch.layers}
    for layer in range(adapter.n_layers):
        names = adapter.weight_names(layer)
        shape = adapter.down_proj(layer).weight.shape
        mask = torch.zeros(shape, dtype=torch.bool)
        if layer in by_layer:
            mask.index_fill_(adapter.spec.neuron_axis, by_layer[layer].neurons, True)
            if by_layer[layer].new_bias is not None:
                biases.add(names[1])
        masks[names[0]] = mask
    return biases, masks


@pytest.mark.parametrize("name", MASKED_METHODS)
def test_method_contract_on_a_masked_lm(setup: Setup, name: str) -> None:
    """unlearn returns the exact edit: a neuron method changes only patched down-projection columns and biases,
    and the edit replays onto (and reverts from) a fresh copy of the input model bit for bit."""
    if name not in SMALL:
        pytest.fail(f"method {name!r} has no small config in SMALL: add one so the contract test covers it")
    method = get(name)
    original = copy.deepcopy(setup.model)
    model = copy.deepcopy(setup.model)
    outcome = unlearn(name, model, setup.inputs, make_config(name, overrides=SMALL[name]))
    assert isinstance(outcome.report, Report) and outcome.report.method == name
    assert outcome.report.reached is None  # no stop threshold: a fixed-strength run
    assert outcome.total == sum(p.numel() for p in original.parameters())
    assert (outcome.changed == 0) == (name == "ftm")  # every method but FTM changes something
    # every run is timed: the reports' Time (s) rows read selection + edit seconds (GA, NPO, ... report no phases)
    assert 0 < outcome.report.selection_seconds + outcome.report.edit_seconds <= outcome.seconds + 1e-6
    assert outcome.changed <= outcome.report.trainable <= outcome.total  # trainable: the scalars it may change
    before, after = original.state_dict(), model.state_dict()
    if method.kind == "neurons":
        assert isinstance(outcome.edit, NeuronPatch)
        adapter = FFNAdapter.for_model(model)
        biases, columns = _columns_and_biases_outside(outcome.edit, adapter)
        for key, old in before.items():
            if key in columns:
                outside = ~columns[key]
                assert torch.equal(after[key][outside], old[outside]), key
            elif key not in biases:
                assert torch.equal(after[key], old), key
        for patch in outcome.edit.layers:
            assert torch.equal(patch.old, FFNAdapter.for_model(original).get_columns(patch.layer, patch.neurons))
            assert torch.equal(patch.new, adapter.get_columns(patch.layer, patch.neurons))
    else:
        assert isinstance(outcome.edit, WeightDelta) and outcome.edit.new
        assert set(outcome.edit.old) == set(outcome.edit.new)
        params = dict(original.named_parameters())
        assert all(torch.equal(outcome.edit.old[n], params[n]) for n in outcome.edit.old)
    replay = copy.deepcopy(original)
    apply_edit(replay, outcome.edit)
    assert all(torch.equal(v, after[k]) for k, v in replay.state_dict().items())
    apply_edit(replay, outcome.edit, revert=True)
    assert all(torch.equal(v, before[k]) for k, v in replay.state_dict().items())


# strong settings for the tiny BERT: each method visibly unlearns the secrets it memorised in its FFNs
STRONG: dict[str, dict] = {
    "apneap": {"k": 40, "per_text_threshold": 0.0, "alpha": 50.0},
    "depn": {"k": 40, "per_text_threshold": 0.0},
    "di": {"max_steps": 10, "batch_size": 8, "learning_rate": 0.01},
    "fo_graddiff": {"max_epochs": 5, "batch_size": 8, "learning_rate": 0.01},
    "ga": {"max_steps": 3, "batch_size": 8, "learning_rate": 0.001},
    "gare": {"k": 20, "learning_rate": 0.1, "epochs": 10, "batch_size": 8, "warmup_fraction": 0.0},
    "ig": {"steps": 2, "n_start": 40, "n_max": 40},
    "npo": {"max_steps": 10, "batch_size": 8, "learning_rate": 0.01},
    "random": {"k": 40, "decay_mode": "pow", "alpha": 0.5, "sigma": 0.0},
    "rmu": {"max_steps": 10, "batch_size": 8, "learning_rate": 0.01, "alpha": 1.0},
    "sga": {"max_steps": 3, "learning_rate": 0.001},
    "simnpo": {"max_steps": 10, "batch_size": 8, "learning_rate": 0.01},
    "simu": {"max_epochs": 5, "batch_size": 8, "steps": 2, "learning_rate": 0.01, "threshold": 0.1},
    "snku": {"k": 8, "top_m": 20, "min_avg_frac": 0.0, "decay_mode": "pow", "alpha": 0.5, "sigma": 0.0},
    "so_graddiff": {"max_epochs": 5, "batch_size": 8, "learning_rate": 0.01},
    "sp": {"ffn_fraction": 0.2, "max_tokens": 1000, "batch_size": 4, "max_steps": 3},
    "ta": {"finetune_steps": 5, "batch_size": 8, "finetune_lr": 0.01},
    "neumuter": {"lambda_kl": 0.1, "eta_l0": 0.0, "learning_rate": 1.0, "batch_size": 4, "passes": 30},
}
NLL_RISE, MA_DROP = 0.5, 0.15  # nats per secret token / share of secret tokens predicted at their [MASK]


def forget_state(model: BertForMaskedLM, inputs: Inputs) -> tuple[float, float]:
    """(mean NLL per secret token at its [MASK], share of secret tokens that are the top prediction)."""
    index = list(range(len(inputs.forget)))
    with torch.no_grad():
        nll = float(inputs.family.nll_sum(model, inputs.forget, index)) / len(index)
        return nll, float(inputs.family.memorization(model, inputs.forget).mean())


@pytest.fixture(scope="module")
def memorised(setup: Setup) -> Setup:
    """The tiny BERT after its FFNs alone memorised the secrets (head norm gain x30, as tiny_models.memorise_ffn
    does for causal LMs: the memory must live in neurons for neuron methods to find), with its statistics."""
    model = copy.deepcopy(setup.model)
    inputs = setup.inputs
    with torch.no_grad():
        dict(model.named_parameters())["cls.predictions.transform.LayerNorm.weight"].mul_(30.0)
    adapter = FFNAdapter.for_model(model)
    ffn = [p for n, p in model.named_parameters()
           if any(n.startswith(f"{prefix}.") for layer in range(adapter.n_layers)
                  for prefix in (f"bert.encoder.layer.{layer}.intermediate", f"bert.encoder.layer.{layer}.output.dense"))]
    optim = torch.optim.Adam(ffn, lr=3e-2)
    index = list(range(len(inputs.forget)))
    for _ in range(200):
        optim.zero_grad()
        (inputs.family.nll_sum(model, inputs.forget, index) / len(index)).backward()
        optim.step()
    model.zero_grad(set_to_none=True)
    args = (inputs.forget.input_ids, inputs.forget.attention_mask, inputs.forget.positions)
    activations = ffn_activations(model, adapter, *args)
    stats = Stats(attribution=grad_x_act(model, adapter, *args, inputs.forget.gold_ids), activations=activations,
                  clusters=cluster_all_layers(activations, ClusterConfig()),
                  ig=integrated_gradients(model, adapter, inputs.forget, IGConfig(steps=2)),
                  ig_owner=inputs.forget.record_index)
    return Setup(model, dataclasses.replace(inputs, stats=stats))


def test_every_masked_method_has_strong_settings() -> None:
    """A newly registered masked method must join the unlearning test below with its own settings."""
    assert set(MASKED_METHODS) - {"ftm"} <= set(STRONG), sorted(set(MASKED_METHODS) - {"ftm"} - set(STRONG))


@pytest.mark.parametrize("name", sorted(set(MASKED_METHODS) - {"ftm"}))
def test_every_method_unlearns_the_secrets_of_a_masked_lm(memorised: Setup, name: str) -> None:
    """Every masked method, the causal-born ones included (GA, SGA, TA, DI, IG, SIMU, SP, FO/SO-GradDiff, NPO,
    SimNPO, RMU), raises the secrets' NLL at their [MASK] or lowers the share predicted, on a tiny BERT that
    memorised them in its FFNs."""
    nll_before, ma_before = forget_state(memorised.model, memorised.inputs)
    assert ma_before >= 0.6 and nll_before < 3.0  # memorised (74 neurons hold most of the 15 secret tokens)
    model = copy.deepcopy(memorised.model)
    unlearn(name, model, memorised.inputs, make_config(name, overrides=STRONG[name]))
    nll_after, ma_after = forget_state(model, memorised.inputs)
    assert nll_after > nll_before + NLL_RISE or ma_after < ma_before - MA_DROP, (nll_before, nll_after, ma_before,
                                                                                  ma_after)


def test_selective_pruning_reads_a_masked_lm_at_the_masks(setup: Setup) -> None:
    """SP's statistics on masked rows count one position per row (its [MASK]); a step prunes the neurons whose
    activation there is largest on the forget rows relative to the retain rows, and zeroes their columns."""
    from lib.methods import pruning, sp

    model = copy.deepcopy(setup.model)
    adapter, family = FFNAdapter.for_model(model), setup.inputs.family
    forget, retain = setup.inputs.forget, setup.inputs.retain
    stats = [pruning.collect_stats(model, adapter, family, rows, batch_size=4, kinds=("ffn",)) for rows in (forget, retain)]
    assert stats[0]["ffn"].count.tolist() == [float(len(forget))] * adapter.n_layers
    assert stats[1]["ffn"].count.tolist() == [float(len(retain))] * adapter.n_layers
    score = pruning.scores(stats[0]["ffn"].importance("mean_abs"), stats[1]["ffn"].importance("mean_abs"), 1e-3)
    cfg = sp.Config(ffn_fraction=0.1, max_tokens=1000, batch_size=4)
    pruned = {k: torch.zeros((adapter.n_layers, w), dtype=torch.bool) for k, w in pruning.widths(adapter).items()}
    assert sp.prune_step(model, adapter, family, forget, retain, cfg, pruned) == int(0.1 * adapter.n_layers * adapter.d_ff)
    chosen = pruned["ffn"]
    assert float(score[chosen].min()) >= float(score[~chosen].max())  # the global top scores, nothing else
    for layer in range(adapter.n_layers):
        assert torch.count_nonzero(adapter.get_columns(layer, chosen[layer].nonzero().flatten())) == 0
