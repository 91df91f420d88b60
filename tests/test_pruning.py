"""Selective Pruning: statistics, scores, selection, pruning, the paper's accuracy metrics, and sp.run."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from lib.core.adapter import FFNAdapter
from lib.core.editing import WeightDelta, apply_edit
from lib.families.causal import CausalFamily, Sequences, of
from lib.methods import Inputs, pruning, sp, unlearn
from tests.tiny_models import tiny_gpt2, tiny_gpt_neo, tiny_llama

CAUSAL = {"llama": tiny_llama, "gpt2": tiny_gpt2, "gpt_neo": tiny_gpt_neo}
PAD = 0
FAMILY = CausalFamily(SimpleNamespace(pad_token_id=PAD), batch_size=4)  # tiny models: no tokenizer


def random_seqs(lengths: tuple[int, ...], seed: int = 0) -> Sequences:
    """Random token rows (ids 3..100) of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    return of([torch.randint(3, 101, (n,), generator=gen).tolist() for n in lengths])


def model_of(family: str) -> tuple[nn.Module, FFNAdapter]:
    """A float64 tiny model of `family` and its adapter."""
    model = CAUSAL[family]().double()
    return model, FFNAdapter.for_model(model)


def direct_activations(model: nn.Module, adapter: FFNAdapter, seqs: Sequences) -> dict[str, list[Tensor]]:
    """Every token's neuron inputs per kind and layer, one unpadded sequence per forward (plain hooks)."""
    acts: dict[str, list[list[Tensor]]] = {k: [[] for _ in range(adapter.n_layers)] for k in pruning.KINDS}
    mods = {"ffn": [adapter.down_proj(l) for l in range(adapter.n_layers)],
            "attn": [adapter.attention_output(l) for l in range(adapter.n_layers)]}
    handles = [mod.register_forward_pre_hook(lambda _m, args, k=kind, l=layer: acts[k][l].append(args[0][0]))
               for kind in pruning.KINDS for layer, mod in enumerate(mods[kind])]
    try:
        with torch.no_grad():
            for row in seqs.ids:
                model(input_ids=torch.tensor([row]))
    finally:
        for h in handles:
            h.remove()
    return {k: [torch.cat(rows) for rows in per_layer] for k, per_layer in acts.items()}


def plain_statistics(a: Tensor) -> dict[str, Tensor]:
    """The five importance functions of activations a (N, n), computed directly."""
    return {"mean_abs": a.abs().mean(0), "freq_pos": (a > 0).double().mean(0), "mean_sqrt": a.abs().sqrt().mean(0),
            "std": a.std(0, unbiased=False), "rms": a.pow(2).mean(0).sqrt()}


@pytest.mark.parametrize("family", sorted(CAUSAL))
def test_statistics_match_direct_computation_with_padding(family: str) -> None:
    model, adapter = model_of(family)
    seqs = random_seqs((7, 3, 11, 5, 9))  # batches of 3 -> right padding inside each batch
    stats = pruning.collect_stats(model, adapter, FAMILY, seqs, batch_size=3)
    direct = direct_activations(model, adapter, seqs)
    widths = pruning.widths(adapter)
    for kind in pruning.KINDS:
        assert stats[kind].count.tolist() == [35.0] * adapter.n_layers
        for layer in range(adapter.n_layers):
            a = direct[kind][layer].double()
            assert a.shape == (35, widths[kind])
            for imp, expected in plain_statistics(a).items():
                got = stats[kind].importance(imp)[layer]
                torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12, msg=f"{kind} {imp} L{layer}")


def test_std_is_real_standard_deviation_not_variance() -> None:
    stats = pruning.RunningStats.zeros(1, 2)
    stats.add(0, torch.tensor([[2.0, -4.0], [6.0, -4.0], [4.0, 2.0]]))
    torch.testing.assert_close(stats.importance("std")[0], torch.tensor([8 / 3, 8.0], dtype=torch.float64).sqrt())
    torch.testing.assert_close(stats.importance("rms")[0], torch.tensor([56 / 3, 12.0], dtype=torch.float64).sqrt())
    torch.testing.assert_close(stats.importance("freq_pos")[0], torch.tensor([1.0, 1 / 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="variance"):
        stats.importance("variance")


def test_max_tokens_stops_after_the_batch_that_reaches_it() -> None:
    model, adapter = model_of("llama")
    seqs = random_seqs((5, 5, 5, 5, 5, 5))
    capped = pruning.collect_stats(model, adapter, FAMILY, seqs, batch_size=2, max_tokens=12)
    first4 = pruning.collect_stats(model, adapter, FAMILY, seqs.subset(range(4)), batch_size=2)
    assert capped["ffn"].count.tolist() == [20.0, 20.0]  # 10 < 12 after batch 1, 20 >= 12 after batch 2
    for kind in pruning.KINDS:
        torch.testing.assert_close(capped[kind].sum_sq, first4[kind].sum_sq)
    exact = pruning.collect_stats(model, adapter, FAMILY, seqs, batch_size=2, max_tokens=10)
    assert exact["attn"].count.tolist() == [10.0, 10.0]


def test_scores_and_global_top_fraction_on_hand_made_values() -> None:
    forget = torch.tensor([[1.0, 0.5, 0.0, 2.0], [0.2, 3.0, 1.0, 0.0]])
    retain = torch.tensor([[1.0, 0.0, 0.5, 1.0], [0.0, 2.0, 0.999, 0.0]])
    score = pruning.scores(forget, retain, 1e-3)
    torch.testing.assert_close(score[0, 1], torch.tensor(500.0))
    torch.testing.assert_close(score[1, 0], torch.tensor(200.0))
    none = torch.zeros(2, 4, dtype=torch.bool)
    top3 = pruning.select_top(score, 3 / 8, none)  # global over both layers: 500, 200, 2/1.001
    assert top3.nonzero().tolist() == [[0, 1], [0, 3], [1, 0]]
    assert pruning.select_top(score, 0.01, none).nonzero().tolist() == [[0, 1]]  # int(0.08) -> at least 1
    assert not pruning.select_top(score, 0.0, none).any()
    with pytest.raises(ValueError, match="fraction"):
        pruning.select_top(score, 1.5, none)


def test_already_pruned_neurons_are_never_chosen_again() -> None:
    score = torch.tensor([[9.0, 8.0, 1.0], [7.0, float("nan"), 2.0]])
    pruned = torch.tensor([[True, False, False], [True, False, False]])
    chosen = pruning.select_top(score, 0.5, pruned)  # 3 of 6, the best free: 8, 2, 1 (NaN last)
    assert chosen.nonzero().tolist() == [[0, 1], [0, 2], [1, 2]]
    everything = pruning.select_top(score, 1.0, pruned)  # never more than the 4 free ones
    assert not (everything & pruned).any() and int(everything.sum()) == 4


def test_prune_steps_pick_disjoint_neurons_on_a_model() -> None:
    model, adapter = model_of("gpt2")
    forget, retain = random_seqs((8, 6), seed=1), random_seqs((8, 6, 7), seed=2)
    cfg = sp.Config(ffn_fraction=0.1, attn_fraction=0.1, max_tokens=100, batch_size=4)
    pruned = {k: torch.zeros((2, w), dtype=torch.bool) for k, w in pruning.widths(adapter).items()}
    history = []
    for _ in range(3):
        n = sp.prune_step(model, adapter, FAMILY, forget, retain, cfg, pruned)
        assert n == 7 + 4  # int(0.1 * 74) FFN + int(0.1 * 48) attention neurons
        history.append({k: m.clone() for k, m in pruned.items()})
    assert [int(h["ffn"].sum()) for h in history] == [7, 14, 21]
    assert [int(h["attn"].sum()) for h in history] == [4, 8, 12]
    for layer in range(2):  # every pruned FFN column really is zero
        idx = pruned["ffn"][layer].nonzero().flatten()
        assert torch.count_nonzero(adapter.get_columns(layer, idx)) == 0


def output_column(module: nn.Module, i: int) -> Tensor:
    """The output weights of input coordinate i of an output projection, by module type."""
    return module.weight[i, :] if isinstance(module, Conv1D) else module.weight[:, i]


@pytest.mark.parametrize("family", sorted(CAUSAL))
def test_pruning_zeroes_exactly_the_chosen_columns(family: str) -> None:
    model, adapter = model_of(family)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    ids = torch.tensor([[5, 17, 33, 8, 90, 41]])
    ffn_idx, attn_idx = [0, 5, 36], [3, 7]

    def zero_inputs(_layer: int, x: Tensor) -> Tensor:
        """Reference: FFN neurons' activations set to 0 in layer 1."""
        x = x.clone()
        x[..., ffn_idx] = 0
        return x

    attn0 = adapter.attention_output(0)
    hook = attn0.register_forward_pre_hook(lambda _m, args: (args[0].index_fill(-1, torch.tensor(attn_idx), 0.0),))
    with torch.no_grad(), adapter.patch(zero_inputs, layers=[1]):
        reference = model(input_ids=ids).logits
    hook.remove()
    ffn = torch.zeros(2, adapter.d_ff, dtype=torch.bool)
    ffn[1, ffn_idx] = True
    attn = torch.zeros(2, adapter.attention_width(0), dtype=torch.bool)
    attn[0, attn_idx] = True
    pruning.apply_pruning(adapter, "ffn", ffn)
    pruning.apply_pruning(adapter, "attn", attn)
    assert torch.count_nonzero(adapter.get_columns(1, torch.tensor(ffn_idx))) == 0
    assert all(torch.count_nonzero(output_column(attn0, i)) == 0 for i in attn_idx)
    changed = {n: int((t != before[n]).sum()) for n, t in model.state_dict().items() if (t != before[n]).any()}
    down, out = adapter.weight_names(1)[0], next(n for n, m in model.named_modules() if m is attn0) + ".weight"
    assert changed == {down: 3 * adapter.d_model, out: 2 * attn0.weight.numel() // adapter.attention_width(0)}
    with torch.no_grad():  # zeroing the columns == zeroing those neurons' activations
        torch.testing.assert_close(model(input_ids=ids).logits, reference)


def test_gpt2_attention_projection_is_conv1d_and_rows_are_zeroed() -> None:
    model, adapter = model_of("gpt2")
    proj = adapter.attention_output(1)
    assert isinstance(proj, Conv1D)
    kept = proj.weight[:, 4].clone()
    adapter.zero_attention_inputs(1, torch.tensor([4, 9]))
    assert torch.count_nonzero(proj.weight[[4, 9], :]) == 0
    assert torch.count_nonzero(proj.weight[[0, 5, 23], :]) == 3 * proj.weight.shape[1]
    assert torch.count_nonzero(proj.weight[:, 4]) == proj.weight.shape[0] - 2
    assert not torch.equal(proj.weight[:, 4], kept)  # only the 2 entries in rows 4 and 9 changed
    with pytest.raises(ValueError, match="out of range"):
        adapter.zero_attention_inputs(1, torch.tensor([24]))


def test_frequent_tokens_counts_and_breaks_ties_by_id() -> None:
    seqs = of([[1, 5, 5, 7, 9], [2, 7, 5, 9, 11, 11], [4, 3, 11]])  # scored (all but the first): 5:3, 11:3, 7:2, 9:2, 3:1
    ids = FAMILY.scored_ids(seqs)
    assert pruning.frequent_tokens(ids, 2) == {5, 11}
    assert pruning.frequent_tokens(ids, 3) == {5, 11, 7}
    assert pruning.frequent_tokens(ids) == {3, 5, 7, 9, 11}


def test_accuracy_counts_on_hand_made_logits() -> None:
    logits = torch.tensor([[[0.1, 0.9, 0.0, 0.5], [0.8, 0.1, 0.3, 0.2], [0.0, 0.0, 1.0, 0.4]]])
    targets = torch.tensor([[1, 2, 3]])  # top-1 hit, rank-2 (top-2 hit), rank-2 on a padding position
    valid = torch.tensor([[True, True, False]])
    counts = pruning.accuracy_counts(logits, targets, valid, skip={1}, ks=(1, 2))
    assert counts == {"top1": (1, 2), "top1_skip": (0, 1), "top2": (2, 2), "top2_skip": (1, 1)}


class BigramModel(nn.Module):
    """A causal 'LM' whose next-token logits are a fixed table row of the current token."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


def test_next_token_accuracy_equals_hand_computation() -> None:
    vocab = 14
    model = BigramModel(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    table = model.table.detach()
    gen = torch.Generator().manual_seed(4)
    seqs = of([torch.randint(1, vocab, (n,), generator=gen).tolist() for n in (9, 4, 12, 6, 2)])
    skip = pruning.frequent_tokens(FAMILY.scored_ids(seqs), 3)
    hits: Counter[str] = Counter()
    for row in seqs.ids:
        for prev, gold in zip(row[:-1], row[1:]):
            ranked = sorted(range(vocab), key=lambda t: -float(table[prev, t]))
            for k in (1, 10):
                hits[f"top{k}"] += gold in ranked[:k]
                if gold not in skip:
                    hits[f"top{k}_skip"] += gold in ranked[:k]
    n = sum(len(r) - 1 for r in seqs.ids)
    n_skip = sum(gold not in skip for r in seqs.ids for gold in r[1:])
    got = pruning.scored_accuracy(model, FAMILY, seqs, batch_size=2, skip=skip)
    expected = {"top1": hits["top1"] / n, "top10": hits["top10"] / n,
                "top1_skip": hits["top1_skip"] / n_skip, "top10_skip": hits["top10_skip"] / n_skip}
    assert got == pytest.approx(expected)
    assert 0 < expected["top1"] < expected["top10"] < 1 and n_skip < n


def greedy_rows(model: nn.Module, prompts: list[list[int]], length: int) -> Sequences:
    """Greedy continuations of `prompts` (the model's own argmax tokens, so its MA on them is 1)."""
    rows = []
    with torch.no_grad():
        for row in prompts:
            row = list(row)
            while len(row) < length:
                row.append(int(model(input_ids=torch.tensor([row])).logits[0, -1].argmax()))
            rows.append(row)
    return of(rows)


def sp_inputs(model: nn.Module, ma: float) -> Inputs:
    """Forget = the model's own greedy texts (MA 1), retain = random text."""
    forget = greedy_rows(model, [[5], [77], [23]], 10)
    return Inputs(family=FAMILY, forget=forget, retain=random_seqs((10, 10, 10), seed=5), stop=ma)


def test_sp_run_reaches_a_loose_threshold() -> None:
    model, adapter = model_of("llama")
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = sp_inputs(model, ma=0.8)
    cfg = sp.Config(ffn_fraction=0.2, attn_fraction=0.1, max_tokens=1000, batch_size=4, max_steps=10)
    outcome = unlearn("sp", model, inputs, cfg)
    report, det = outcome.report, outcome.report.details
    assert report.reached and report.method == "sp" and 1 <= report.steps <= 10
    # only down-projection and attention-output weights change, each to 0; the edit reverts to the input
    prunable = {id(adapter.down_proj(layer).weight) for layer in range(adapter.n_layers)}
    prunable |= {id(module.weight) for module in pruning.attn_outputs(adapter)}
    params = dict(model.named_parameters())
    assert isinstance(outcome.edit, WeightDelta) and 0 < outcome.changed <= report.trainable
    assert outcome.edit.new and all(id(params[n]) in prunable for n in outcome.edit.new)
    assert all((new[new != original[n]] == 0).all() for n, new in outcome.edit.new.items())
    assert det["history"]["max_ma"][0] == 1.0 and det["history"]["max_ma"][-1] <= 0.8
    assert len(det["history"]["max_ma"]) == report.steps + 1 and max(det["ma"]) <= 0.8
    assert det["pruned"] == {"ffn": 14 * report.steps, "attn": 4 * report.steps}
    assert sum(det["pruned_per_layer"]["ffn"]) == det["pruned"]["ffn"] and len(det["pruned_per_layer"]["attn"]) == 2
    assert report.strength == det["pruned"]["ffn"] + det["pruned"]["attn"]
    assert det["accuracy"]["before"]["forget"]["top1"] == 1.0  # every forget token after the first is greedy
    assert det["accuracy"]["after"]["forget"]["top1"] < det["accuracy"]["before"]["forget"]["top1"]
    assert set(det["accuracy"]["after"]["retain"]) == {"top1", "top10", "top1_skip", "top10_skip"}
    apply_edit(model, outcome.edit, revert=True)
    assert all(torch.equal(p, original[n]) for n, p in model.named_parameters())


def test_sp_run_reports_not_reached_with_an_impossible_threshold() -> None:
    model, _ = model_of("gpt_neo")
    cfg = sp.Config(max_tokens=1000, batch_size=4, max_steps=2)
    report = sp.run(model, sp_inputs(model, ma=-1.0), cfg)
    assert not report.reached and report.steps == 2
    assert report.details["pruned"] == {"ffn": 2, "attn": 0}  # int(0.02 * 74) = 1 per step, no attention
    assert report.trainable == 2 * 37 * 24 and len(report.details["history"]["max_ma"]) == 3


def test_sp_needs_retain_and_validates_config() -> None:
    model, _ = model_of("llama")
    inputs = Inputs(family=FAMILY, forget=random_seqs((5,)), stop=0.5)
    with pytest.raises(ValueError, match="retain"):
        sp.run(model, inputs, sp.Config())
    for bad in ({"ffn_fraction": 1.5}, {"ffn_fraction": 0.0}, {"attn_importance": "variance"},
                {"max_tokens": 0}, {"eps_attn": 0.0}, {"max_steps": 0}):
        with pytest.raises(ValueError):
            sp.Config(**bad)
    assert sp.Config(ffn_fraction=0.0, attn_fraction=0.05).fractions() == {"attn": 0.05}
