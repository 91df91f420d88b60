"""Selective Pruning (SP, Pochinkov & Schoots, paper 004) as an unlearning method for both families.

Each step collects neuron statistics on the forget and the retain set (at most `max_tokens` valid tokens
each, on the model as pruned so far), scores every not-yet-pruned neuron by I_forget / (I_retain + ε) and
zeroes the output columns of the global top `ffn_fraction` of all FFN neurons and `attn_fraction` of all
attention neurons (lib.methods.pruning). Steps repeat until every forget sample's MA <= thresholds.ma
(checked before the first step and after each) or `max_steps` (reached=False). Defaults and the choice of
importance functions are explained in lib.methods.pruning. The method is deterministic. Without a stop
threshold (a fixed-strength run) it takes `max_steps` steps.

Details report the pruned counts per kind and per layer, the max-MA history (before and after each step)
and the paper's metrics (pooled top-1 / top-10 accuracy at every scored token, also skipping gold tokens
among each set's own 50 most frequent scored tokens) on forget and retain, before and after.
Causal LMs: statistics over every real token of the forget / retain sequences (the paper's). Masked LMs (the
analogue): over each masked row's [MASK] position, where the model reads the secret token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.core.params import Count, Fraction, Positive, check_ranges
from lib.methods import Family, Inputs, Report, pruning
from lib.methods.training import final_ma, forgotten

label = "Selective Pruning"  # the name every report prints
families = ("masked", "causal")
needs = ("forget", "retain")
kind = "weights"  # attention neurons are pruned too when attn_fraction > 0


@dataclass(frozen=True)
class Config:
    """SP hyper-parameters: per-step fractions, importance functions, statistics budget, step cap, ε."""

    ffn_fraction: Fraction = 0.02  # of all FFN neurons per step (paper's main experiment)
    attn_fraction: Fraction = 0.0  # the main experiment prunes FFN neurons only
    ffn_importance: str = "mean_abs"
    attn_importance: str = "mean_abs"
    max_tokens: Count = 100_000  # valid tokens per dataset per step (paper: ~1e5)
    batch_size: Count = 8
    max_steps: Count = 50  # 50 steps of 2 % would prune every FFN neuron
    eps_ffn: Positive = 1e-3
    eps_attn: Positive = 1e-4

    def __post_init__(self) -> None:
        """Reject values the method cannot use."""
        check_ranges(self)
        if self.ffn_fraction == 0 and self.attn_fraction == 0:
            raise ValueError("ffn_fraction and attn_fraction are both 0; allowed: at least one > 0")
        for field_name in ("ffn_importance", "attn_importance"):
            if getattr(self, field_name) not in pruning.IMPORTANCES:
                raise ValueError(f"{field_name}={getattr(self, field_name)!r} unknown; "
                                 f"allowed: {', '.join(pruning.IMPORTANCES)}")

    def fractions(self) -> dict[str, float]:
        """Per-step fraction of each neuron kind that is pruned at all."""
        both = {"ffn": self.ffn_fraction, "attn": self.attn_fraction}
        return {kind: frac for kind, frac in both.items() if frac > 0}


def prune_step(model: nn.Module, adapter: FFNAdapter, family: Family, forget: Any, retain: Any,
               cfg: Config, pruned: dict[str, Tensor]) -> int:
    """One SP step in place: statistics, scores, zero the new picks, add them to `pruned`; return how many."""
    kinds = tuple(cfg.fractions())
    stats = [pruning.collect_stats(model, adapter, family, samples, cfg.batch_size, cfg.max_tokens, kinds)
             for samples in (forget, retain)]
    chosen = pruning.choose(stats[0], stats[1], pruned, cfg.fractions(),
                            {"ffn": cfg.ffn_importance, "attn": cfg.attn_importance},
                            {"ffn": cfg.eps_ffn, "attn": cfg.eps_attn})
    for kind, mask in chosen.items():
        pruning.apply_pruning(adapter, kind, mask)
        pruned[kind] |= mask.cpu()
    return sum(int(mask.sum()) for mask in chosen.values())


def metrics(model: nn.Module, inputs: Inputs, frequent: dict[str, set[int]],
            batch_size: int) -> dict[str, dict[str, float]]:
    """The paper's top-1 / top-10 accuracies (and skip-frequent variants) on forget and retain."""
    sets = {"forget": inputs.forget, "retain": inputs.retain}
    return {key: pruning.scored_accuracy(model, inputs.family, samples, batch_size, frequent[key])
            for key, samples in sets.items()}


def trainable_count(adapter: FFNAdapter, kinds: tuple[str, ...]) -> int:
    """Scalar weights SP may zero: the down-projection weights, plus attention output weights if pruned."""
    total = sum(adapter.down_proj(layer).weight.numel() for layer in range(adapter.n_layers)) if "ffn" in kinds else 0
    if "attn" in kinds:
        total += sum(m.weight.numel() for m in pruning.attn_outputs(adapter))
    return total


def pruned_details(pruned: dict[str, Tensor]) -> dict[str, Any]:
    """Pruned counts per kind and per layer (plain ints)."""
    return {"pruned": {kind: int(mask.sum()) for kind, mask in pruned.items()},
            "pruned_per_layer": {kind: [int(v) for v in mask.sum(1)] for kind, mask in pruned.items()}}


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Prune step by step until the forget set meets the stop threshold, or max_steps; see the module docstring."""
    if inputs.retain is None or len(inputs.retain) == 0:
        raise ValueError("sp needs inputs.retain (the retain set D_r); got none")
    adapter = FFNAdapter.for_model(model)
    widths = pruning.widths(adapter)  # both kinds, so the report always has both counts
    pruned = {kind: torch.zeros((adapter.n_layers, w), dtype=torch.bool) for kind, w in widths.items()}
    frequent = {key: pruning.frequent_tokens(inputs.family.scored_ids(samples))
                for key, samples in (("forget", inputs.forget), ("retain", inputs.retain))}
    before = metrics(model, inputs, frequent, cfg.batch_size)
    done, worst = forgotten(model, inputs)
    history, steps = [worst], 0
    while not done and steps < cfg.max_steps:
        if prune_step(model, adapter, inputs.family, inputs.forget, inputs.retain, cfg, pruned) == 0:
            break  # every neuron of the pruned kinds is gone
        steps += 1
        done, worst = forgotten(model, inputs)
        history.append(worst)
    counts = pruned_details(pruned)
    details = {**counts, "steps": steps, "history": {"max_ma": history}, "ma": final_ma(model, inputs),
               "accuracy": {"before": before, "after": metrics(model, inputs, frequent, cfg.batch_size)},
               "ffn_importance": cfg.ffn_importance, "attn_importance": cfg.attn_importance}
    return Report(reached=done if inputs.stop is not None else None, strength=float(sum(counts["pruned"].values())),
                  strength_name="pruned_neurons", steps=steps, trainable=trainable_count(adapter, tuple(cfg.fractions())),
                  details=details)
