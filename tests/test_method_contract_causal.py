"""The method contract on causal LMs: every registered causal method, run through lib.methods.unlearn.

Each method runs at a small fixed strength (no stop rule) on a tiny LLaMA-style model (gated MLP, 2 layers,
d_ff 37) that first memorised the forget set, with exactly the inputs its `needs` names. The outcome must be
an edit that replays (and reverts) the run bit for bit, a neuron method must leave everything but the
down-projection columns it patched bit-identical, and the forget set must end up less memorised.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.attribution import ffn_activations, grad_x_act
from lib.core.clustering import ClusterConfig, cluster_all_layers
from lib.core.editing import NeuronPatch, WeightDelta, apply_edit
from lib.core.ig import IGConfig, integrated_gradients
from lib.families.causal import CausalFamily, accuracy, of, sequence_nll
from lib.methods import METHODS, Inputs, Stats, get, unlearn
from lib.methods.training import count_parameters
from tests.tiny_models import D_FF, N_LAYERS, memorise_ffn, random_neighbours, tiny_llama, tiny_word_tokenizer

CAUSAL = [name for name in METHODS if "causal" in get(name).families]
PAD = 0
FAMILY = CausalFamily(tiny_word_tokenizer(), batch_size=4)  # a word per id (APNEAP swaps span words), pad id 0
# distinct first tokens (a shared one could not predict two different second tokens); spans on two of them
FORGET = of([[11, 17, 42, 88, 23, 5, 61, 30, 77, 2], [64, 54, 9, 33, 71, 12, 95, 48, 2],
             [37, 81, 26, 58, 14, 99, 45, 70, 2]], [(4, 8), None, (2, 6)])
RETAIN = of([[5, 6, 7, 8, 9, 10, 2], [20, 21, 22, 23, 24, 2], [40, 41, 43, 44, 45, 46, 47, 2]])
K_NEIGHBOURS = 2

# small settings: each method runs in about a second at a strength that visibly unlearns the tiny model
SMALL: dict[str, dict[str, Any]] = {
    "ftm": {},
    "random": {"k": 45},
    "depn": {"k": 20},
    "apneap": {"k": 20, "per_text_threshold": 0.0, "alpha": 10.0},
    "gare": {"k": 40, "learning_rate": 0.1, "epochs": 10, "batch_size": 3, "warmup_fraction": 0.0},
    "snku": {"k": 24, "top_m": 20, "min_avg_frac": 0.0},
    # tiny-model settings (see test_neumuter): no L0 term, a light KL, a fast learning rate
    "neumuter": {"lambda_kl": 0.1, "eta_l0": 0.0, "learning_rate": 1.0, "batch_size": 1, "passes": 30},
    "ga": {"learning_rate": 1e-3, "batch_size": 3, "max_steps": 10},
    "sga": {"learning_rate": 1e-3, "max_steps": 10},
    "ta": {"finetune_lr": 3e-4, "finetune_steps": 3, "batch_size": 3},
    "di": {"learning_rate": 1e-3, "batch_size": 3, "max_steps": 10},
    "ig": {"n_start": 24, "targets": "all"},
    "simu": {"steps": 2, "learning_rate": 1e-2, "batch_size": 2, "max_epochs": 3},
    "fo_graddiff": {"learning_rate": 1e-3, "batch_size": 2, "max_epochs": 5},
    "so_graddiff": {"learning_rate": 1e-2, "batch_size": 2, "max_epochs": 3},
    "sp": {"ffn_fraction": 0.1, "max_tokens": 1000, "batch_size": 4, "max_steps": 5},
    "npo": {"learning_rate": 1e-3, "batch_size": 3, "max_steps": 10},
    "simnpo": {"learning_rate": 1e-3, "batch_size": 3, "max_steps": 10},
    "rmu": {"learning_rate": 1e-2, "batch_size": 3, "max_steps": 10, "alpha": 1.0},
}
NLL_RISE = 0.3  # nats per token the forget NLL (about 0.03 when memorised) must rise by ...
MA_DROP = 0.15  # ... or the mean memorization accuracy (1.0 when memorised) must fall by


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memorised() -> nn.Module:
    """The tiny LLaMA (float64) with the forget set memorised; copy it before editing."""
    return memorise_ffn(tiny_llama(seed=0).double(), FORGET, PAD)


def statistics(model: nn.Module, needs: tuple[str, ...]) -> Stats:
    """The forget targets' statistics a method needs, computed as the upstream stages do (one row per token)."""
    wanted = {"attribution", "activations", "clusters", "ig"} & set(needs)
    if not wanted:
        return Stats()
    adapter = FFNAdapter.for_model(model)
    rows = FAMILY.target_rows(FORGET, "all")
    args = (rows.input_ids, rows.attention_mask, rows.positions)
    values: dict[str, Any] = {}
    if {"activations", "clusters"} & wanted:
        values["activations"] = ffn_activations(model, adapter, *args)  # (R, L, d_ff)
        values["clusters"] = cluster_all_layers(values["activations"], ClusterConfig())
    if "attribution" in wanted:
        values["attribution"] = grad_x_act(model, adapter, *args, rows.gold_ids)  # (L, d_ff)
    if "ig" in wanted:
        values["ig"] = integrated_gradients(model, adapter, rows, IGConfig(steps=5))  # (R, L, d_ff)
        values["ig_owner"] = rows.sample
    return Stats(**values)


def inputs_for(model: nn.Module, needs: tuple[str, ...]) -> Inputs:
    """Inputs holding exactly what `needs` names (the forget set always): a method reading more fails."""
    return Inputs(family=FAMILY, forget=FORGET, retain=RETAIN if "retain" in needs else None,
                  neighbours=of(random_neighbours(FORGET.ids, K_NEIGHBOURS, 0)) if "neighbours" in needs else None,
                  stats=statistics(model, needs), stop=None, seed=0)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    """Every state-dict entry bit-identical."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def check_neuron_patch(before: nn.Module, after: nn.Module, patch: NeuronPatch) -> None:
    """Outside the patched down-projection columns (and biases) every parameter is bit-identical; biases the
    patch gave a bias-less model (LLaMA's mlp_bias) are zero outside the down-projections."""
    old, new = FFNAdapter.for_model(before), FFNAdapter.for_model(after)
    down = {name for layer in range(new.n_layers) for name in new.weight_names(layer)}
    originals = dict(before.named_parameters())
    added = {n for n, _ in after.named_parameters()} - set(originals)
    assert bool(added) == patch.biases_added and added <= set(new.bias_names())
    originals.update({n: torch.zeros_like(p) for n, p in after.named_parameters() if n in added})
    assert all(torch.equal(p, originals[n]) for n, p in after.named_parameters() if n not in down)
    patched = {p.layer: p for p in patch.layers}
    for layer in range(new.n_layers):
        part = patched.get(layer)
        cols = part.neurons if part is not None else torch.zeros(0, dtype=torch.long)
        rest = torch.tensor([i for i in range(new.d_ff) if i not in set(cols.tolist())], dtype=torch.long)
        assert torch.equal(new.get_columns(layer, rest), old.get_columns(layer, rest))
        bias, old_bias = new.down_proj_bias(layer), old.down_proj_bias(layer)
        if part is None or part.new_bias is None:
            assert bias is None or torch.equal(bias, old_bias if old_bias is not None else torch.zeros_like(bias))
        if part is not None:
            assert torch.equal(new.get_columns(layer, cols), part.new)
            assert torch.equal(old.get_columns(layer, cols), part.old)
            assert bool((part.new != part.old).any(dim=1).all())  # each patched column really changed


def check_weight_delta(before: nn.Module, after: nn.Module, delta: WeightDelta) -> None:
    """The delta names exactly the tensors that changed, with their old and new values."""
    originals = dict(before.named_parameters())
    for name, p in after.named_parameters():
        if name in delta.new:
            assert torch.equal(delta.old[name], originals[name]) and torch.equal(delta.new[name], p)
            assert not torch.equal(p, originals[name])
        else:
            assert torch.equal(p, originals[name]), name


def forget_state(model: nn.Module) -> tuple[float, float]:
    """(mean per-token NLL, mean memorization accuracy) of the forget set."""
    return float(sequence_nll(model, FORGET, PAD).mean()), float(accuracy(model, FORGET, PAD).mean())


def test_every_causal_method_has_small_settings() -> None:
    """A newly registered causal method must join this contract test with its own small settings."""
    assert set(CAUSAL) <= set(SMALL), sorted(set(CAUSAL) - set(SMALL))
    for name in CAUSAL:
        method = get(name)
        assert method.kind in ("neurons", "weights")
        fields = set(Inputs.__dataclass_fields__) | set(Stats.__dataclass_fields__)
        assert set(method.needs) <= fields, (name, method.needs)


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_method_contract(memorised: nn.Module, name: str) -> None:
    """unlearn() returns a bit-exact, replayable edit of the declared kind that makes the forget set less memorised."""
    method = get(name)
    original = copy.deepcopy(memorised)
    model = copy.deepcopy(memorised)
    inputs = inputs_for(model, tuple(method.needs))
    nll_before, ma_before = forget_state(model)
    assert ma_before == 1.0
    outcome = unlearn(name, model, inputs, method.Config(**SMALL[name]))
    report, edit = outcome.report, outcome.edit
    assert report.method == name and report.reached is None  # no stop rule: the configured strength
    assert outcome.total == count_parameters(model) and 0 <= outcome.changed <= outcome.total
    assert 0 <= outcome.changed <= report.trainable <= outcome.total  # trainable: the scalars it may change
    assert all(p.grad is None for p in model.parameters())

    if method.kind == "neurons":
        assert isinstance(edit, NeuronPatch)
        check_neuron_patch(original, model, edit)
        assert set(edit.neurons) <= set(report.neurons)
        biases = sum(part.new_bias is not None for part in edit.layers)  # APNEAP's edit: down-projection biases
        assert outcome.changed <= (len(edit.neurons) + biases) * FFNAdapter.for_model(model).d_model
    else:
        assert isinstance(edit, WeightDelta)
        check_weight_delta(original, model, edit)
        assert outcome.changed == sum(int((edit.new[n] != edit.old[n]).sum()) for n in edit.new)

    replay = copy.deepcopy(original)
    apply_edit(replay, edit)
    assert states_equal(replay, model)
    apply_edit(replay, edit, revert=True)
    assert states_equal(replay, original)

    nll_after, ma_after = forget_state(model)
    if name == "ftm":  # the reference row: no edit at all
        assert outcome.changed == 0 and edit == NeuronPatch(()) and states_equal(model, original)
        return
    assert outcome.changed > 0
    assert nll_after > nll_before + NLL_RISE or ma_after < ma_before - MA_DROP, \
        (name, nll_before, nll_after, ma_before, ma_after)


def test_tiny_model_shape() -> None:
    """The contract runs on the intended model: 2 gated-MLP layers of d_ff 37."""
    adapter = FFNAdapter.for_model(tiny_llama())
    assert (adapter.n_layers, adapter.d_ff) == (N_LAYERS, D_FF)


@pytest.mark.parametrize("check_every, max_steps, steps, checked, reached", [
    (1, 10, 5, [0, 1, 2, 3, 4, 5], True),
    (3, 10, 6, [0, 3, 6], True),  # the rule holds from step 5 on: found at the next check, one step late
    (3, 4, 4, [0, 3, 4], False),  # the last step is always checked
])
def test_stop_rule_checked_every_n_steps(check_every: int, max_steps: int, steps: int, checked: list[int],
                                         reached: bool) -> None:
    from lib.methods.training import optimise
    weight = nn.Parameter(torch.zeros(()))
    taken: list[int] = []

    def step_loss(step: int) -> float:
        """One step of a loss whose gradient is 1."""
        taken.append(step)
        weight.sum().backward()
        return 1.0

    stop = lambda: (len(taken) >= 5, float(len(taken)))  # noqa: E731
    model = nn.Module()
    model.w = weight
    progress = optimise(model, step_loss, torch.optim.SGD([weight], lr=1.0), max_steps, stop, check_every)
    assert (progress.steps, progress.checked, progress.reached) == (steps, checked, reached)
    assert progress.max_ma == [float(s) for s in checked] and float(weight.detach()) == -steps
    with pytest.raises(ValueError, match="check_every"):
        get("di").Config(check_every=0)
