"""SIMU-GradDiff (Selective Influence Machine Unlearning): attribution mask + masked Sophia GradDiff.

(a) Attribution (SIMU Eq. 1-2). Each forget sample becomes one sample per target token (the
family's target rows with "span": a QA sample's span is its answer, so each answer token is
one sample, as the paper splits QA pairs; samples without a span use every token), optionally
capped at `max_targets` evenly spaced target tokens per sample (None = all; a CPU knob). The
layer's down-projection input at the scored position is scaled from 0 to its clean value β in
m steps (lib.core.ig, grid "linspace" = m evenly spaced steps by default) and
Att = (1/m) Σ_j Σ_i β·∂L_i/∂a, with L = NLL of the gold token: lib.core.ig's IG with objective
"loss", summed over rows, (L, d_ff).
Sign: "support" (default) scores -Att: high = the neuron's activation lowers the forget NLL,
i.e. it carries the forget answers (Eq. 2 read with L = log-probability, the probability the
paper's Eq. 1b is written with). "loss" scores Att as literally written with L = NLL.
(b) Mask: per layer, a neuron is critical iff score > t·max_layer(score); a layer whose max is
<= 0 gets none. "dual" (default; the paper's reported setting): every forget-critical neuron,
also those critical for the retain set; "forget_only": forget-critical minus retain-critical
(the same attribution on inputs.retain), SIMU C.3.
(c) Unlearning: GradDiff (lib.methods.graddiff) with MaskedSophia. Attention
projections (weights, biases) are fully trainable; each down-projection weight only on its
critical neurons' output columns (mask along adapter.spec.neuron_axis: nn.Linear (d_model,
d_ff) axis 1, GPT-2 Conv1D (d_ff, d_model) axis 0); down-projection biases and everything else
frozen. Defaults: Table 3 (t 0.3, m 5) and Table 4 (λ 2, batch 16, lr 5e-6).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.core.ig import GRIDS, IGConfig, cap_targets, integrated_gradients
from lib.core.params import Count, PositiveFraction
from lib.methods import Family, Inputs, Report, so_graddiff
from lib.methods.graddiff import NEEDS, attention_parameters, check_retain, count, down_weights, train
from lib.methods.training import device_of, training_report

label = "SIMU"  # the name every report prints
families = ("masked", "causal")
needs = NEEDS
kind = "weights"
ROWS_PER_CALL = 1024  # bounds the engine's (R, L, d_ff) result; rows are summed per call

SIGNS = ("support", "loss")
MASKS = ("dual", "forget_only")


@dataclass(frozen=True)
class Config(so_graddiff.Config):
    """SIMU hyper-parameters: SO-GradDiff's (Sophia, λ, batch, epochs) plus the attribution and mask settings."""

    steps: Count = 5  # m, SIMU Table 3
    grid: str = "linspace"  # m evenly spaced steps from 0 to β, both ends
    threshold: PositiveFraction = 0.3  # t, SIMU Table 3
    sign: str = "support"
    mask: str = "dual"
    max_targets: Count | None = None  # target tokens per sample (evenly spaced); None = all
    max_rows_per_batch: Count = 64  # IG engine chunk size

    def __post_init__(self) -> None:
        """Reject values the attribution, the mask or the loop cannot use (super() checks every field's range)."""
        super().__post_init__()
        if self.sign not in SIGNS:
            raise ValueError(f"sign={self.sign!r} invalid; allowed {SIGNS}")
        if self.mask not in MASKS:
            raise ValueError(f"mask={self.mask!r} invalid; allowed {MASKS}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid={self.grid!r} invalid; allowed {GRIDS}")
        if self.grid == "linspace" and self.steps < 2:  # a grid with both ends needs two points
            raise ValueError(f"steps={self.steps!r} invalid; allowed: an integer >= 2 with grid linspace")

    def ig_config(self) -> IGConfig:
        """The IG engine's configuration: objective = NLL of the gold token."""
        return IGConfig(steps=self.steps, grid=self.grid, objective="loss", max_rows_per_batch=self.max_rows_per_batch)


def attribution(model: nn.Module, adapter: FFNAdapter, family: Family, samples: Any, cfg: Config) -> Tensor:
    """Att (L, d_ff) of Eq. 2 with L = gold-token NLL, summed over every target-token row of `samples`."""
    rows, device, total = cap_targets(family.target_rows(samples, "span"), cfg.max_targets), device_of(model), None
    for start in range(0, rows.input_ids.shape[0], ROWS_PER_CALL):
        part = rows.take(slice(start, start + ROWS_PER_CALL), device)
        summed = integrated_gradients(model, adapter, part, cfg.ig_config()).sum(0)  # (L, d_ff)
        total = summed if total is None else total + summed
    return total


def critical_mask(scores: Tensor, threshold: float) -> Tensor:
    """Bool (L, d_ff): score > t * the layer's max score, none in a layer whose max <= 0."""
    top = scores.max(dim=1, keepdim=True).values  # (L, 1)
    return (scores > threshold * top) & (top > 0)


def critical_neurons(model: nn.Module, adapter: FFNAdapter, inputs: Inputs, cfg: Config) -> Tensor:
    """SIMU's mask (L, d_ff) bool: forget-critical neurons, minus retain-critical ones under "forget_only"."""
    sign = -1.0 if cfg.sign == "support" else 1.0

    def critical(samples: Any) -> Tensor:
        """Per-layer thresholded attribution scores of one sample set."""
        return critical_mask(sign * attribution(model, adapter, inputs.family, samples, cfg), cfg.threshold)

    forget = critical(inputs.forget)
    return forget & ~critical(check_retain(inputs)) if cfg.mask == "forget_only" else forget


def column_mask(adapter: FFNAdapter, critical: Tensor) -> Tensor:
    """Bool mask broadcastable to a down-projection weight: True on critical neurons' columns."""
    return critical[None, :] if adapter.spec.neuron_axis == 1 else critical[:, None]


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Attribute, mask, then masked-Sophia GradDiff until the forget set meets the stop threshold, or max_epochs."""
    check_retain(inputs)
    adapter = FFNAdapter.for_model(model)
    started = time.perf_counter()
    critical = critical_neurons(model, adapter, inputs, cfg).cpu()  # (L, d_ff)
    seconds = time.perf_counter() - started
    attention, down = attention_parameters(adapter), down_weights(adapter)
    masks = [None] * len(attention) + [column_mask(adapter, critical[layer]) for layer in range(adapter.n_layers)]
    progress = train(model, inputs, cfg.sophia(attention + down, masks), cfg.lam, cfg.batch_size, cfg.max_epochs)
    per_layer = [int(n) for n in critical.sum(dim=1)]
    return training_report(model, inputs, progress, {
        **so_graddiff.sophia_details(cfg), "mask": cfg.mask, "sign": cfg.sign, "threshold": cfg.threshold,
        "attribution_steps": cfg.steps, "grid": cfg.grid, "max_targets": cfg.max_targets,
        "critical_per_layer": per_layer, "critical_total": sum(per_layer), "attribution_seconds": seconds},
        trainable_count=count(attention) + sum(per_layer) * adapter.d_model)
