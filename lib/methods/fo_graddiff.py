"""FO-GradDiff (SIMU's first-order baseline): GradDiff with AdamW on every floating parameter.

Loss and loop: lib.methods.graddiff (−mean NLL(forget batch) + λ·mean NLL(retain batch),
stop when every forget sample's MA <= thresholds.ma or after `max_epochs` passes). Defaults
are SIMU's Table 4: λ 0.3, batch 16, learning rate 5e-6 (9e-6 for LUME on LLaMA2-7B), 5-20
epochs (20 here: the loop stops as soon as the threshold holds). Weight decay 0 by default:
decay would move weights the objective does not ask to move.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.core.params import Count, NonNegative, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.graddiff import NEEDS, count, train
from lib.methods.training import floating_parameters, training_report

label = "FO-GradDiff"  # the name every report prints
families = ("masked", "causal")
needs = NEEDS
kind = "weights"


@dataclass(frozen=True)
class Config:
    """FO-GradDiff hyper-parameters: AdamW learning rate and weight decay, λ, batch size, epoch cap."""

    learning_rate: Positive = 5e-6  # SIMU Table 4
    lam: Positive = 0.3  # SIMU Table 4: weight of the retain term
    batch_size: Count = 16  # SIMU Table 4
    max_epochs: Count = 20  # SIMU Table 4 uses 5-20
    weight_decay: NonNegative = 0.0

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """AdamW GradDiff on all floating parameters until the forget set meets the stop threshold, or max_epochs."""
    params = floating_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    progress = train(model, inputs, optimizer, cfg.lam, cfg.batch_size, cfg.max_epochs)
    return training_report(model, inputs, progress, {
        "optimizer": "adamw", "learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay,
        "lam": cfg.lam, "batch_size": cfg.batch_size, "max_epochs": cfg.max_epochs}, trainable_count=count(params))
