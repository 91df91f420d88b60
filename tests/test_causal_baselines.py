"""The NeuMuter paper's causal-LM baselines (GA, SGA, TA, DI, IG) on memorised tiny models."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch
from torch import nn

from lib.core.adapter import FFNAdapter, TargetRows
from lib.core.editing import NeuronPatch, WeightDelta
from lib.families.causal import CausalFamily, accuracy, logits_of, of, pad, token_nll
from lib.methods import Inputs, di, ga, ig, sga, ta, unlearn
from lib.methods.training import backward_mean, count_parameters, cycling_batches, forgotten, nll_sum
from tests.tiny_models import memorise_ffn, tiny_gpt2, tiny_gpt_neo, tiny_llama

# distinct first tokens: a shared first token could not predict two different second tokens
SEQS = of([[11, 17, 42, 88, 23, 5, 61, 30, 77, 2], [64, 54, 9, 33, 71, 12, 95, 48, 2]], [(4, 8), None])
PAD_ONLY = SimpleNamespace(pad_token_id=0)  # the tiny models have no tokenizer; the family reads only the pad id
INPUTS = Inputs(family=CausalFamily(PAD_ONLY, batch_size=2), forget=SEQS, stop=0.5, seed=0)
BUILDERS: dict[str, Callable[[], nn.Module]] = {"gpt2": tiny_gpt2, "gpt_neo": tiny_gpt_neo, "llama": tiny_llama}
# tiny-model settings: small enough that the methods need several steps (or τ values) to get there
FAST: dict[Any, Any] = {
    ga: ga.Config(learning_rate=1e-3, max_steps=30),
    sga: sga.Config(learning_rate=1e-3, max_steps=30),
    ta: ta.Config(finetune_lr=3e-4, finetune_steps=3),
    di: di.Config(learning_rate=1e-3, max_steps=30),
    ig: ig.Config(n_start=4),
}


@pytest.fixture(scope="module")
def memorised() -> dict[str, nn.Module]:
    """One memorised float64 tiny model per architecture (copy before editing)."""
    torch.manual_seed(0)
    return {arch: memorise_ffn(build().double(), SEQS) for arch, build in BUILDERS.items()}


def _name(method: Any) -> str:
    """A method module's registry key (lib.methods.<name>)."""
    return method.__name__.rsplit(".", 1)[-1]


def _copy(memorised: dict[str, nn.Module], arch: str) -> tuple[nn.Module, FFNAdapter]:
    """A fresh copy of a memorised model and its adapter."""
    model = copy.deepcopy(memorised[arch])
    return model, FFNAdapter.for_model(model)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", list(BUILDERS))
@pytest.mark.parametrize("method", [ga, sga, ta, di, ig], ids=_name)
def test_method_reaches_thresholds(memorised: dict[str, nn.Module], arch: str, method: Any) -> None:
    """Each method takes MA from 1.0 to <= 0.5 on every sample and says so consistently."""
    model, _ = _copy(memorised, arch)
    assert (accuracy(model, SEQS, 0) == 1).all()
    outcome = unlearn(_name(method), model, INPUTS, FAST[method])
    report = outcome.report
    ma = accuracy(model, SEQS, 0)
    assert report.reached and bool((ma <= 0.5).all()), (report, ma)
    assert report.method == _name(method) and method.needs == ("forget",)
    assert isinstance(outcome.edit, NeuronPatch if method.kind == "neurons" else WeightDelta)
    assert report.details["ma"] == pytest.approx(ma.tolist())
    assert outcome.total == count_parameters(model) and 0 < outcome.changed <= report.trainable <= outcome.total
    json.dumps(report.details)  # plain floats and lists only
    if method in (ga, sga, di):
        assert report.strength == report.steps == len(report.details["loss"]) > 0
    if method is di:
        assert report.details["kappa"] == 8.0
    history = report.details["history"]
    assert history["max_ma"][-1] <= 0.5 and all(m > 0.5 for m in history["max_ma"][:-1])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ga_one_step_changes_parameters_and_reports_consistently(memorised: dict[str, nn.Module], arch: str) -> None:
    """max_steps=1: one Adam step moves every kind of parameter; reached equals the stop test."""
    model, _ = _copy(memorised, arch)
    before = _state(model)
    report = ga.run(model, INPUTS, ga.Config(max_steps=1))
    after = model.state_dict()
    assert report.steps == 1 and report.strength == 1.0 and report.strength_name == "steps"
    assert report.reached == forgotten(model, INPUTS)[0]
    assert not report.reached  # lr 5e-4 for one step cannot undo the memorisation
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert any("mlp" in k for k in moved) and any("emb" in k or "wte" in k for k in moved)
    assert all(p.grad is None for p in model.parameters())
    assert report.trainable == count_parameters(model)


def test_training_is_seeded(memorised: dict[str, nn.Module]) -> None:
    """Same seed, same weights; batches cycle over every sample once per pass."""
    results = []
    for _ in range(2):
        model, _ = _copy(memorised, "gpt2")
        ga.run(model, replace(INPUTS, seed=7), ga.Config(batch_size=1, max_steps=3))
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    order = cycling_batches(5, 2, seed=3)
    first_pass = [next(order) for _ in range(3)]
    assert sorted(i for b in first_pass for i in b) == [0, 1, 2, 3, 4] and [len(b) for b in first_pass] == [2, 2, 1]
    again = cycling_batches(5, 2, seed=3)
    assert [next(again) for _ in range(3)] == first_pass


def test_micro_batches_give_the_batch_mean_gradient(memorised: dict[str, nn.Module]) -> None:
    """Accumulating over micro-batches of 1 gives the same loss and gradient as one batch of 2."""
    grads, losses = [], []
    for micro in (1, 2):
        model, _ = _copy(memorised, "gpt2")
        family = CausalFamily(PAD_ONLY, batch_size=micro)
        losses.append(backward_mean(family, SEQS, [1, 0], lambda idx: nll_sum(model, family, SEQS, idx)))
        grads.append([p.grad.clone() for p in model.parameters()])
    with torch.no_grad():
        token, valid = token_nll(memorised["gpt2"], *pad(SEQS.ids, 0))
    assert losses[0] == pytest.approx(losses[1], abs=1e-12)
    assert losses[1] == pytest.approx(float(token.sum() / valid.sum()), abs=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(*grads))


def test_cap_reports_not_reached(memorised: dict[str, nn.Module]) -> None:
    """A tight cap stops the method with reached=False and the cap as strength."""
    model, _ = _copy(memorised, "llama")
    report = sga.run(model, INPUTS, sga.Config(learning_rate=1e-5, max_steps=2))
    assert not report.reached and report.steps == 2 and report.strength == 2.0
    model, _ = _copy(memorised, "llama")
    report = ig.run(model, INPUTS, ig.Config(n_start=1, n_max=2))
    assert not report.reached and report.strength == 2.0 and report.details["history"]["neurons"] == [1, 2]


def test_sga_selects_most_memorized() -> None:
    """Above the limit: top-k of all; under it: top-k of those still above the threshold; ties by index."""
    assert sga.select(torch.tensor([0.9, 1.0, 0.8]), 0.7, 0.5, 1) == [1]
    assert sga.select(torch.tensor([0.95, 0.9, 0.3]), 0.7, 0.5, 3) == [0, 1, 2]  # mean 0.717 > limit
    assert sga.select(torch.tensor([0.2, 0.9, 0.95, 0.1]), 0.7, 0.5, 1) == [2]  # mean 0.54 <= limit
    assert sga.select(torch.tensor([0.2, 0.9, 0.95, 0.1]), 0.7, 0.5, 3) == [2, 1]
    assert sga.select(torch.tensor([1.0, 0.6, 1.0]), 0.7, 0.5, 1) == [0]


def test_sga_run_follows_selection(memorised: dict[str, nn.Module]) -> None:
    """The run ascends on the selected sample only; with k=1 that is one sample per step."""
    model, _ = _copy(memorised, "llama")
    report = sga.run(model, INPUTS, FAST[sga])
    picked = report.details["picked"]
    assert len(picked) == report.steps and all(len(p) == 1 for p in picked)
    assert picked[0] == [0]  # both start at MA 1.0: the tie goes to the lower index
    assert report.details["steps_above_limit"] >= 1


def test_ta_result_is_theta_minus_tau_delta(memorised: dict[str, nn.Module]) -> None:
    """The result equals θ_o − τ·Δ exactly for the reported τ, Δ from the same seeded fine-tune."""
    cfg = ta.Config(finetune_lr=1e-3, finetune_steps=2, tau=0.25, tau_step=0.25, tau_max=4.0)
    model, _ = _copy(memorised, "gpt2")
    original = _state(model)
    seeded = replace(INPUTS, seed=1)
    report = ta.run(model, seeded, cfg)
    assert report.reached and report.strength_name == "tau" and len(report.details["history"]["tau"]) >= 2
    assert report.details["history"]["tau"] == ta.taus(cfg)[: len(report.details["history"]["tau"])]
    twin, _ = _copy(memorised, "gpt2")
    theta_o, delta, _ = ta.task_vector(twin, seeded, cfg)
    assert "lm_head.weight" not in theta_o  # tied to the embedding: counted once
    assert sum(t.numel() for t in theta_o.values()) == report.trainable == count_parameters(model)
    params = dict(model.named_parameters())
    for name, base in theta_o.items():
        assert torch.equal(base, original[name])
        assert torch.equal(params[name], base - report.strength * delta[name]), name
    assert any(float(d.abs().max()) > 0 for d in delta.values())


def test_ta_tau_schedule() -> None:
    """τ = 3, 4, ..., 10 by default; tau_max always tried last."""
    assert ta.taus(ta.Config()) == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert ta.taus(ta.Config(tau=1.0, tau_step=2.0, tau_max=4.0)) == [1.0, 3.0, 4.0]
    assert ta.taus(ta.Config(tau=2.0, tau_max=2.0)) == [2.0]


def test_di_teacher_target_on_hand_made_logits() -> None:
    """softmax(logits − κ·onehot(gold)) as log-probabilities, for any leading shape."""
    logits = torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64)
    out = di.teacher_target(logits, torch.tensor(2), 8.0)
    expected = torch.log_softmax(torch.tensor([1.0, 2.0, -5.0, 0.5], dtype=torch.float64), dim=-1)
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)
    batch = torch.stack([logits, logits.flip(0)])[None]  # (1, 2, 4)
    out = di.teacher_target(batch, torch.tensor([[2, 0]]), 8.0)
    assert torch.allclose(out[0, 1].exp(), torch.softmax(torch.tensor([-7.5, 3.0, 2.0, 1.0], dtype=torch.float64), -1))


def test_di_kl_is_zero_at_the_teacher_and_positive_after_lowering(memorised: dict[str, nn.Module]) -> None:
    """With κ = 0 the target is the model itself (KL 0, padding ignored); κ = 8 gives KL > 0."""
    model, _ = _copy(memorised, "gpt_neo")
    same = di.teacher_targets(model, INPUTS, 0.0)
    assert [t.shape[0] for t in same] == [9, 8]
    assert abs(float(di.kl_sum(model, INPUTS, same, [0, 1]).detach())) < 1e-10
    lowered = di.teacher_targets(model, INPUTS, 8.0)
    assert float(di.kl_sum(model, INPUTS, lowered, [0, 1]).detach()) > 1.0


def test_ig_rows_for_a_sequence_with_a_span() -> None:
    """Span tokens t give prefix ids[:t], position t-1, gold ids[t]; no span means every token."""
    seqs = of([[5, 6, 7, 8, 9], [3, 4, 2]], [(2, 4), None])
    rows = INPUTS.family.target_rows(seqs, "span")
    assert rows.input_ids.tolist() == [[5, 6, 0], [5, 6, 7], [3, 0, 0], [3, 4, 0]]
    assert rows.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert rows.positions.tolist() == [1, 2, 0, 1] and rows.gold_ids.tolist() == [7, 8, 4, 2]
    assert rows.sample.tolist() == [0, 0, 1, 1]
    assert INPUTS.family.target_rows(seqs, "all").gold_ids.tolist() == [6, 7, 8, 9, 4, 2]
    with pytest.raises(ValueError, match="targets='middle'"):
        INPUTS.family.target_rows(seqs, "middle")


def test_ig_rows_predict_like_the_full_sequence(memorised: dict[str, nn.Module]) -> None:
    """A truncated row's logits at t-1 equal the full sequence's (later tokens cannot matter)."""
    model, _ = _copy(memorised, "gpt_neo")
    rows = INPUTS.family.target_rows(SEQS, "all")
    with torch.no_grad():
        row_logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
        full = logits_of(model, *pad(SEQS.ids, 0))
    picked = row_logits[torch.arange(len(rows.positions)), rows.positions]
    assert torch.allclose(picked, full[rows.sample, rows.positions], atol=1e-10)


def _gold_log_prob(model: nn.Module, rows: TargetRows) -> float:
    """Summed log-probability of each row's gold token at its position."""
    with torch.no_grad():
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
    log_probs = torch.log_softmax(logits[torch.arange(len(rows.positions)), rows.positions], dim=-1)
    return float(log_probs.gather(1, rows.gold_ids[:, None]).sum())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ig_score_sign(memorised: dict[str, nn.Module], arch: str) -> None:
    """score = −Σ IG(loss): zeroing the top-ranked neurons hurts the gold tokens more than the bottom-ranked."""
    model, adapter = _copy(memorised, arch)
    rows = INPUTS.family.target_rows(SEQS, "all")
    ranked = ig.ranking(ig.neuron_scores(model, adapter, rows, ig.Config()))
    effects = []
    for chosen in (ranked[:8], ranked[-8:]):
        edited, edited_adapter = _copy(memorised, arch)
        for layer, neuron in chosen:
            edited_adapter.set_columns(layer, torch.tensor([neuron]), torch.zeros(1, adapter.d_model))
        effects.append(_gold_log_prob(edited, rows))
    assert effects[0] < _gold_log_prob(model, rows) - 1.0 and effects[0] < effects[1]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ig_changes_only_the_chosen_columns(memorised: dict[str, nn.Module], arch: str) -> None:
    """Every tensor but the down-projections is bit-identical; there, exactly the chosen columns are zero."""
    model, adapter = _copy(memorised, arch)
    before = _state(model)
    report = ig.run(model, INPUTS, FAST[ig])
    chosen = report.details["neurons"]
    assert sum(len(c) for c in chosen) == report.strength == report.details["history"]["neurons"][-1]
    assert report.details["neurons_per_layer"] == [len(c) for c in chosen]
    assert sorted(report.neurons) == sorted((layer, n) for layer, c in enumerate(chosen) for n in c)
    down = {name for layer in range(adapter.n_layers) for name in adapter.weight_names(layer)}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in down)
    original, _ = _copy(memorised, arch)
    old_adapter = FFNAdapter.for_model(original)
    for layer, neurons in enumerate(chosen):
        rest = torch.tensor([i for i in range(adapter.d_ff) if i not in neurons], dtype=torch.long)
        assert torch.equal(adapter.get_columns(layer, rest), old_adapter.get_columns(layer, rest))
        assert (adapter.get_columns(layer, torch.tensor(neurons, dtype=torch.long)) == 0).all()
        assert all(old_adapter.get_columns(layer, torch.tensor([i])).abs().sum() > 0 for i in neurons)
        bias = adapter.down_proj_bias(layer)
        assert bias is None or torch.equal(bias, old_adapter.down_proj_bias(layer))
    assert report.details["top_scores"] == sorted(report.details["top_scores"], reverse=True)


def test_ig_schedule() -> None:
    """n_start doubling, capped by n_max and by the model's neuron count."""
    assert ig.schedule(16, 4096, 74) == [16, 32, 64, 74]
    assert ig.schedule(4, 8, 74) == [4, 8]
    assert ig.schedule(16, 16, 74) == [16]
    assert ig.schedule(100, 4096, 74) == [74]


@pytest.mark.parametrize("build, match", [
    (lambda: ga.Config(learning_rate=-1.0), "learning_rate=-1.0"),
    (lambda: ga.Config(max_steps=0), "max_steps=0"),
    (lambda: ga.Config(batch_size=0), "batch_size=0"),
    (lambda: sga.Config(limit=1.5), "limit=1.5"),
    (lambda: sga.Config(top_k=0), "top_k=0"),
    (lambda: ta.Config(tau=0.0), "tau=0.0"),
    (lambda: ta.Config(tau_max=2.0), "tau_max=2.0"),
    (lambda: ta.Config(finetune_lr=float("nan")), "finetune_lr=nan"),
    (lambda: ta.Config(finetune_steps=0), "finetune_steps=0"),
    (lambda: di.Config(strength=0.0), "strength=0.0"),
    (lambda: di.Config(learning_rate=0), "learning_rate=0"),
    (lambda: ig.Config(targets="middle"), "targets='middle'"),
    (lambda: ig.Config(n_start=16, n_max=8), "n_max=8"),
    (lambda: ig.Config(grid="trapezoid"), "grid='trapezoid'"),
    (lambda: ig.Config(steps=0), "steps=0"),
])
def test_config_validation_names_the_bad_value(build: Callable[[], Any], match: str) -> None:
    """Bad settings raise ValueError naming the value."""
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        build()


def test_defaults_are_the_papers() -> None:
    """GA lr 5e-4, SGA y = 0.7 and k = 1, TA τ = 3, DI κ = 8, IG m = 5 on span tokens."""
    assert ga.Config().learning_rate == 5e-4 and ga.Config().max_steps == 100
    assert (sga.Config().limit, sga.Config().top_k) == (0.70, 1)
    assert ta.Config().tau == 3.0 and di.Config().strength == 8.0
    assert (ig.Config().steps, ig.Config().targets, ig.Config().grid) == (5, "span", "left_riemann")
