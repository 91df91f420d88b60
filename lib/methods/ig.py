"""Integrated-Gradients knowledge neurons (IG; Dai et al. 2022, Wu et al. 2023, Chang et al. 2024).

Attribution: one row per target token of each forget sample (the family's target rows: a
causal LM scores token t of the secret span when `targets` is "span" and the sample has one,
otherwise every token 1..T-1, from the sample cut to its first t tokens at position t-1; a
masked LM scores each [MASK] row's hidden token). lib.core.ig's batched engine gives the IG of
every FFN neuron (down-projection input), integrated from the zero vector to the clean
activation at that position, for the objective "loss" = NLL of the gold token.

Sign: a neuron that supports the memorised token lowers its NLL, so its IG on the loss is
negative. The ranking score is therefore score = −Σ_rows IG (high = drives recall).

Unlearning: zero the output-weight columns (adapter.set_columns; bias untouched) of the
top-N neurons by score over all layers, N = n_start, 2·n_start, ... up to n_max (and never
more than the model has), until every forget sample meets the Eq. 17 MA threshold. The
top-N sets are nested, so each try zeroes only the newly added neurons (cumulative zeroing
is exact). Without a stop threshold (a fixed-strength run) the top n_start neurons are zeroed.
No random choice. Default m = 5 IG steps (a CPU-friendly value; DEPN uses 20).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter, TargetRows
from lib.core.editing import zero_neurons
from lib.core.ig import IGConfig, cap_targets, integrated_gradients
from lib.core.params import Count, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import device_of, final_ma, forgotten

label = "IG"  # the name every report prints
families = ("masked", "causal")
needs = ("forget",)
kind = "neurons"

TARGETS = ("span", "all")
ROWS_PER_CALL = 1024  # bounds the engine's (R, L, d_ff) result; rows are summed per call
TOP_SCORES = 20  # how many of the best scores go into the report


@dataclass(frozen=True)
class Config:
    """IG hyper-parameters: steps m, grid, target tokens, the neuron-count schedule, engine chunk size."""

    steps: Count = 5
    grid: str = "left_riemann"
    targets: str = "span"
    n_start: Count = 16
    n_max: Count = 4096
    max_rows_per_batch: Count = 64
    max_targets: Count | None = None  # target tokens per sample, evenly spaced (a CPU knob); None = all

    def __post_init__(self) -> None:
        """Reject values the method cannot use (IG settings are checked by IGConfig)."""
        check_ranges(self)
        if self.targets not in TARGETS:
            raise ValueError(f"targets={self.targets!r} invalid; allowed {TARGETS}")
        if self.n_max < self.n_start:
            raise ValueError(f"n_max={self.n_max!r} invalid; allowed: an integer >= n_start={self.n_start}")
        self.ig_config()

    def ig_config(self) -> IGConfig:
        """The engine's configuration: objective = NLL of the gold token."""
        return IGConfig(steps=self.steps, grid=self.grid, objective="loss",
                        max_rows_per_batch=self.max_rows_per_batch)


def neuron_scores(model: nn.Module, adapter: FFNAdapter, rows: TargetRows, cfg: Config) -> Tensor:
    """Recall score of every FFN neuron (L, d_ff): minus the IG of the gold NLL summed over rows."""
    total, device = None, device_of(model)
    for start in range(0, rows.input_ids.shape[0], ROWS_PER_CALL):
        part = rows.take(slice(start, start + ROWS_PER_CALL), device)
        summed = integrated_gradients(model, adapter, part, cfg.ig_config()).sum(0)  # (L, d_ff)
        total = summed if total is None else total + summed
    return -total


def ranking(scores: Tensor) -> list[tuple[int, int]]:
    """All (layer, neuron) pairs by descending score (ties: lower layer, then lower neuron first)."""
    order = torch.sort(-scores.flatten().double(), stable=True).indices.tolist()
    d_ff = scores.shape[1]
    return [(k // d_ff, k % d_ff) for k in order]


def schedule(n_start: int, n_max: int, total: int) -> list[int]:
    """Neuron counts tried: n_start doubling, capped at min(n_max, total), the cap itself last."""
    cap, out, n = min(n_max, total), [], n_start
    while n < cap:
        out.append(n)
        n *= 2
    return out + [cap]


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Zero the top-N recall neurons' output columns, N doubling until the forget set meets the stop threshold."""
    adapter = FFNAdapter.for_model(model)
    rows = cap_targets(inputs.family.target_rows(inputs.forget, cfg.targets), cfg.max_targets)
    scores = neuron_scores(model, adapter, rows, cfg)
    ranked, done_n, history = ranking(scores), 0, {"neurons": [], "max_ma": []}
    counts = schedule(cfg.n_start, cfg.n_max, len(ranked)) if inputs.stop is not None else [cfg.n_start]
    for n in counts:
        zero_neurons(adapter, ranked[done_n:n])  # nested top-N sets: zero only the new ones
        done_n = n
        done, worst = forgotten(model, inputs)
        history["neurons"].append(n)
        history["max_ma"].append(worst)
        if done:
            break
    return Report(reached=done if inputs.stop is not None else None, strength=float(n), strength_name="neurons",
                  steps=len(history["neurons"]), trainable=counts[-1] * adapter.d_model, neurons=tuple(ranked[:n]),
                  details=_details(model, inputs, scores, ranked[:n], history))


def _details(model: nn.Module, inputs: Inputs, scores: Tensor, chosen: list[tuple[int, int]],
             history: dict[str, list]) -> dict:
    """JSON-ready details: final MA, history, chosen neurons per layer, best scores."""
    per_layer: list[list[int]] = [[] for _ in range(scores.shape[0])]
    for layer, neuron in chosen:
        per_layer[layer].append(neuron)
    top = [float(scores[layer, neuron]) for layer, neuron in chosen[:TOP_SCORES]]
    return {"ma": final_ma(model, inputs), "history": history, "neurons": per_layer,
            "neurons_per_layer": [len(v) for v in per_layer], "top_scores": top}
