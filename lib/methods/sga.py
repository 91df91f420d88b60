"""Selective gradient ascent (SGA, Barbulescu & Triantafillou 2024, as NeuMuter B.4 describes it).

Each step recomputes every forget sample's MA and ascends (Adam, all parameters, like GA)
on the causal-LM loss of `top_k` samples only:
- while the population's mean MA > `limit` (y = 0.70 in the paper): the top-k most
  memorized samples;
- once the mean is under the limit: the top-k most memorized among the samples whose MA is
  still above thresholds.ma, until every sample meets it (or `max_steps`).
Ties go to the lower sample index. Without a stop threshold (a fixed-strength run) the second
phase keeps ascending on the top-k most memorized samples. The learning rate defaults to GA's
5e-4 (the paper gives no separate value for SGA, which refines GA). The selection has no random
choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.params import Count, Fraction, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import backward_mean, nll_sum, training_report, until_forgotten

label = "SGA"  # the name every report prints
families = ("masked", "causal")
needs = ("forget",)
kind = "weights"


@dataclass(frozen=True)
class Config:
    """SGA hyper-parameters: memorization limit y, samples per step k, Adam learning rate, step cap."""

    limit: Fraction = 0.70  # y in NeuMuter B.4: a memorization accuracy
    top_k: Count = 1  # k in NeuMuter B.4
    learning_rate: Positive = 5e-4
    max_steps: Count = 100

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)


def select(ma: Tensor, limit: float, threshold: float, top_k: int) -> list[int]:
    """Indices of the samples to ascend on this step, most memorized first (see module docstring)."""
    order = torch.sort(-ma.double(), stable=True).indices  # descending MA, ties by index
    if float(ma.double().mean()) <= limit:
        order = order[ma[order] > threshold]  # only the samples still above the threshold
    return order[:top_k].tolist()


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Selective ascent until every forget sample meets the stop threshold, or max_steps."""
    family, forget, picked, above_limit = inputs.family, inputs.forget, [], []
    threshold = float("-inf") if inputs.stop is None else inputs.stop

    def step_loss(_step: int) -> float:
        """Pick the samples from fresh memorization values, backpropagate minus their mean NLL."""
        ma = family.memorization(model, forget)
        index = select(ma, cfg.limit, threshold, cfg.top_k)
        picked.append(index)
        above_limit.append(bool(float(ma.double().mean()) > cfg.limit))
        return backward_mean(family, forget, index, lambda idx: -nll_sum(model, family, forget, idx))

    progress = until_forgotten(model, inputs, step_loss, cfg.learning_rate, cfg.max_steps)
    return training_report(model, inputs, progress,
                           {"optimizer": "adam", "learning_rate": cfg.learning_rate, "picked": picked,
                            "steps_above_limit": sum(above_limit)})
