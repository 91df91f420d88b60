"""Gradient ascent (GA, Jang et al. 2023): maximise the causal-LM loss of the forget set.

All floating parameters, Adam (no weight decay; see lib.methods.training). Batches of
`batch_size` forget samples cycle over the set in a fresh seeded order each pass; one Adam
step per batch on minus the batch's mean token NLL (the family's loss: next tokens of a causal
LM, masked tokens of a masked LM), then the stop check (memorization, one forward pass). Paper
settings (NeuMuter, Appendix B.4): lr 5e-4 as in Jang et al. for GPT-Neo, 32 forget samples
unlearned together (batch_size 32). Steps continue until every forget sample meets the stop
threshold (the Eq. 17 MA threshold on the causal track), capped at `max_steps`; without a stop
threshold it takes `max_steps` steps.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lib.core.params import Count, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import backward_mean, cycling_batches, nll_sum, training_report, until_forgotten

label = "GA"  # the name every report prints
families = ("masked", "causal")
needs = ("forget",)
kind = "weights"


@dataclass(frozen=True)
class Config:
    """GA hyper-parameters: Adam learning rate, forget samples per step, step cap."""

    learning_rate: Positive = 5e-4  # NeuMuter B.4 / Jang et al.
    batch_size: Count = 32  # the paper's 32 forget samples in one batch
    max_steps: Count = 100

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Ascend on the forget loss until every forget sample meets the stop threshold, or max_steps."""
    family, forget = inputs.family, inputs.forget
    order = cycling_batches(len(forget), cfg.batch_size, inputs.seed)

    def step_loss(_step: int) -> float:
        """Backpropagate minus the mean NLL of the next batch."""
        return backward_mean(family, forget, next(order), lambda idx: -nll_sum(model, family, forget, idx))

    progress = until_forgotten(model, inputs, step_loss, cfg.learning_rate, cfg.max_steps)
    return training_report(model, inputs, progress, {"optimizer": "adam", "learning_rate": cfg.learning_rate})
