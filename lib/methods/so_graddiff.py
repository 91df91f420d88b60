"""SO-GradDiff (SIMU's second-order baseline, after SOUL): GradDiff with Sophia on SIMU's trainable set.

Trainable: every attention projection (inputs and output, weights and biases) and every FFN
down-projection weight, with no neuron mask: SIMU's Table 5 counts all MLP neurons as critical
for SO-GradDiff. Everything else (embeddings, norms, up/gate projections, down-projection
biases) stays frozen. Optimizer: lib.methods.sophia.MaskedSophia without masks (SIMU Eq. 3-4).
Loop: lib.methods.graddiff. Defaults: SIMU Table 4 (λ 2, batch 16, lr 5e-6, 5-20
epochs) and Sophia's betas (0.965, 0.99), γ 0.01.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.params import Count, Fraction, NonNegative, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.graddiff import NEEDS, attention_parameters, count, down_weights, train
from lib.methods.sophia import DEFAULT_BETAS, MaskedSophia
from lib.methods.training import training_report

label = "SO-GradDiff"  # the name every report prints
families = ("masked", "causal")
needs = NEEDS
kind = "weights"


@dataclass(frozen=True)
class Config:
    """SO-GradDiff hyper-parameters: Sophia settings, λ, batch size, epoch cap."""

    learning_rate: Positive = 5e-6  # SIMU Table 4
    lam: Positive = 2.0  # SIMU Table 4: weight of the retain term
    batch_size: Count = 16  # SIMU Table 4
    max_epochs: Count = 20  # SIMU Table 4 uses 5-20
    betas: tuple[Fraction, Fraction] = DEFAULT_BETAS
    gamma: Positive = 0.01
    eps: Positive = 1e-12
    weight_decay: NonNegative = 0.0

    def __post_init__(self) -> None:
        """Reject values the loop or the optimizer cannot use."""
        check_ranges(self)
        if max(self.betas) >= 1:  # a moving average with beta = 1 never moves
            raise ValueError(f"betas={self.betas!r} invalid; allowed: two numbers in [0, 1)")

    def sophia(self, params: list[nn.Parameter], masks: list | None = None) -> MaskedSophia:
        """The optimizer over `params` (masks aligned with them, None = unmasked)."""
        return MaskedSophia(params, lr=self.learning_rate, betas=tuple(self.betas), gamma=self.gamma, eps=self.eps,
                            weight_decay=self.weight_decay, masks=masks)


def sophia_details(cfg: Config) -> dict:
    """JSON-ready optimizer and loop settings."""
    return {"optimizer": "sophia", "learning_rate": cfg.learning_rate, "betas": list(cfg.betas),
            "gamma": cfg.gamma, "eps": cfg.eps, "weight_decay": cfg.weight_decay, "lam": cfg.lam,
            "batch_size": cfg.batch_size, "max_epochs": cfg.max_epochs}


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Sophia GradDiff on attention projections and all down-projection weights, until forgotten or max_epochs."""
    adapter = FFNAdapter.for_model(model)
    params = attention_parameters(adapter) + down_weights(adapter)
    progress = train(model, inputs, cfg.sophia(params), cfg.lam, cfg.batch_size, cfg.max_epochs)
    return training_report(model, inputs, progress, {
        **sophia_details(cfg), "critical_per_layer": [adapter.d_ff] * adapter.n_layers,
        "critical_total": adapter.neuron_count()}, trainable_count=count(params))
