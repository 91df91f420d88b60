"""Negative Preference Optimization (NPO; Zhang, Lin, Bai & Mei 2024): unlearning as preference optimisation
with only negative examples.

Loss over a batch of forget samples (x, y):  L = -(2/β) · mean log σ(-β · log(π_θ(y|x) / π_ref(y|x))),
where log π(y|x) is the sample's log-likelihood summed over its scored tokens (the family's `sample_nll`:
next tokens of a causal LM, the masked token of a masked LM) and π_ref is the model before unlearning (its
log-likelihoods are computed once, before the first step: no second model copy). The gradient is GA's
weighted by σ(β · log ratio) ∈ (0, 1), which vanishes once a sample is unlikely enough: NPO unlearns more
slowly and stops itself, where GA diverges (paper Sec. 4). As β → 0 the loss tends to GA's.
With `retain_weight` > 0 the retain set's mean token NLL is added (the paper's NPO+RT).

Loop as GA: all floating parameters, Adam, batches of `batch_size` forget samples cycling in a fresh seeded
order each pass, until every forget sample meets the stop threshold (or `max_steps`; without a stop
threshold exactly `max_steps`). Defaults are the paper's TOFU settings (β 0.1, lr 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lib.core.params import Count, NonNegative, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import forget_retain_steps, training_report

label = "NPO"  # the name every report prints
families = ("masked", "causal")
needs = ("forget", "retain")
kind = "weights"


@dataclass(frozen=True)
class Config:
    """NPO hyper-parameters: inverse temperature β, Adam learning rate, batch, step cap, retain weight."""

    beta: Positive = 0.1  # NPO paper, TOFU
    learning_rate: Positive = 1e-5  # NPO paper, TOFU
    batch_size: Count = 32
    max_steps: Count = 100
    retain_weight: NonNegative = 0.0  # 0: NPO; > 0: NPO+RT, the retain set's mean token NLL times this weight

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)


def reference_nll(model: nn.Module, inputs: Inputs) -> Tensor:
    """-log π_ref(y|x) of every forget sample (N,) under the model before unlearning, float32."""
    family, forget, parts = inputs.family, inputs.forget, []
    with torch.no_grad():
        for start in range(0, len(forget), family.batch_size):
            index = list(range(start, min(start + family.batch_size, len(forget))))
            parts.append(family.sample_nll(model, forget, index).float())
    return torch.cat(parts)


def npo_sum(model: nn.Module, inputs: Inputs, reference: Tensor, index: list[int], beta: float) -> Tensor:
    """-(2/β) · Σ log σ(-β · (log π_θ - log π_ref)) over forget samples `index` (differentiable)."""
    nll = inputs.family.sample_nll(model, inputs.forget, index).float()  # (B,)
    log_ratio = reference.to(nll.device)[index] - nll  # log π_θ - log π_ref
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).sum()


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Minimise the NPO loss until every forget sample meets the stop threshold, or max_steps."""
    reference = reference_nll(model, inputs)
    progress = forget_retain_steps(model, inputs, lambda index: npo_sum(model, inputs, reference, index, cfg.beta),
                                   cfg.batch_size, cfg.retain_weight, cfg.learning_rate, cfg.max_steps, "npo")
    return training_report(model, inputs, progress, {"optimizer": "adam", "learning_rate": cfg.learning_rate,
                                                     "beta": cfg.beta, "retain_weight": cfg.retain_weight})
