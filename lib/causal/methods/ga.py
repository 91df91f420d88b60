"""Gradient ascent (GA, Jang et al. 2023): maximise the causal-LM loss of the forget set.

All floating parameters, Adam (no weight decay; see lib.causal.methods.training). Batches of
`batch_size` forget samples cycle over the set in a fresh seeded order each pass; one Adam
step per batch on minus the batch's mean token NLL, then the stop check (MA, one forward
pass). Paper settings (NeuMuter, Appendix B.4): lr 5e-4 as in Jang et al. for GPT-Neo, 32
forget samples unlearned together (batch_size 32). Steps continue until every forget sample
meets the Eq. 17 MA threshold, capped at `max_steps`.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lib.adapter import FFNAdapter
from lib.causal.methods.base import UnlearnInputs, UnlearnReport
from lib.causal.methods.training import (backward_mean, check_int, check_positive, cycling_batches, nll_sum,
                                         training_report, until_forgotten)

name = "ga"
reads = ("forget",)


@dataclass(frozen=True)
class Config:
    """GA hyper-parameters: Adam learning rate, forget samples per step, step cap."""

    learning_rate: float = 5e-4  # NeuMuter B.4 / Jang et al.
    batch_size: int = 32  # the paper's 32 forget samples in one batch
    max_steps: int = 100

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_positive("learning_rate", self.learning_rate)
        check_int("batch_size", self.batch_size, 1)
        check_int("max_steps", self.max_steps, 1)


def run(model: nn.Module, adapter: FFNAdapter, inputs: UnlearnInputs, cfg: Config, seed: int) -> UnlearnReport:
    """Ascend on the forget loss until every forget sample's MA <= thresholds.ma, or max_steps."""
    forget, order = inputs.forget, cycling_batches(len(inputs.forget), cfg.batch_size, seed)

    def step_loss(_step: int) -> float:
        """Backpropagate minus the mean NLL of the next batch."""
        return backward_mean(forget, next(order), inputs.batch_size,
                             lambda idx: -nll_sum(model, forget, idx, inputs.pad_id))

    progress = until_forgotten(model, inputs, step_loss, cfg.learning_rate, cfg.max_steps)
    return training_report(name, model, inputs, progress, {"optimizer": "adam", "learning_rate": cfg.learning_rate})
