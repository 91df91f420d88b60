"""Deliberate imagination (DI, Dong et al. 2024): self-distillation away from the forget tokens.

The teacher is the ORIGINAL model, read once before training (no second model): at every
scored token of every forget sample (causal LMs: each next-token position; masked LMs, the natural
analogue: each secret token's [MASK]), its logits with the ground-truth token's
logit lowered by κ (`strength`, 8 in NeuMuter B.4) give the target distribution
softmax(teacher − κ·onehot(gold)). The student (the model itself, all floating parameters,
Adam) minimises KL(target ‖ student), averaged over the batch's scored positions; batches
cycle in a seeded order like GA. Steps continue until every forget sample meets the Eq. 17
MA threshold, capped at `max_steps`; the rule is checked every `check_every` steps, since scoring the whole
forget set can cost more than a step (a run may then overshoot the first step that meets it by up to
check_every - 1 steps). No learning rate is stated in the paper; 5e-5 is the
usual fine-tuning rate of Dong et al.'s setting.

Memory: the targets are kept as log-probabilities (scored tokens, V) per forget sample on the
model's device, about 1.3 GB in float32 for 32 samples of 200 tokens and a 50k vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.params import Count, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import backward_mean, cycling_batches, training_report, until_forgotten

label = "DI"  # the name every report prints
families = ("masked", "causal")
needs = ("forget",)
kind = "weights"


@dataclass(frozen=True)
class Config:
    """DI hyper-parameters: κ, Adam learning rate, forget samples per step, step cap."""

    strength: Positive = 8.0  # κ, NeuMuter B.4
    learning_rate: Positive = 5e-5
    batch_size: Count = 32
    max_steps: Count = 100
    check_every: Count = 1  # steps between stop-rule checks (and after the last step)

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)


def _wide(logits: Tensor) -> Tensor:
    """Logits in at least float32: half-precision soft-max targets lose the small probabilities."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def teacher_target(logits: Tensor, gold: Tensor, strength: float) -> Tensor:
    """log softmax(logits − κ·onehot(gold)) over the last axis: logits (..., V), gold (...) -> (..., V)."""
    lowered = logits.scatter_add(-1, gold[..., None], torch.full_like(logits[..., :1], -strength))
    return torch.log_softmax(lowered, dim=-1)


def teacher_targets(model: nn.Module, inputs: Inputs, strength: float) -> list[Tensor]:
    """Per forget sample, the target log-probabilities (its scored tokens, V) from the current model."""
    forget, family, out = inputs.forget, inputs.family, []
    with torch.no_grad():
        for start in range(0, len(forget), family.batch_size):
            part = list(range(start, min(start + family.batch_size, len(forget))))
            logits, gold = family.scored_logits(model, forget, part)  # (n, V), (n,)
            target = teacher_target(_wide(logits), gold, strength)
            out += list(target.split([family.count(forget, [i]) for i in part]))
    return out


def kl_sum(model: nn.Module, inputs: Inputs, targets: list[Tensor], index: list[int]) -> Tensor:
    """KL(target ‖ student) summed over the scored tokens of forget samples `index` (differentiable)."""
    logits, _gold = inputs.family.scored_logits(model, inputs.forget, index)
    student = torch.log_softmax(_wide(logits), dim=-1)  # (n, V)
    target = torch.cat([targets[i] for i in index])  # (n, V)
    return (target.exp() * (target - student)).sum()


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Distil toward the κ-lowered teacher until every forget sample meets the stop threshold, or max_steps."""
    targets = teacher_targets(model, inputs, cfg.strength)
    order = cycling_batches(len(inputs.forget), cfg.batch_size, inputs.seed)

    def step_loss(_step: int) -> float:
        """Backpropagate the mean KL of the next batch."""
        return backward_mean(inputs.family, inputs.forget, next(order), lambda idx: kl_sum(model, inputs, targets, idx))

    progress = until_forgotten(model, inputs, step_loss, cfg.learning_rate, cfg.max_steps, cfg.check_every)
    return training_report(model, inputs, progress, {"kappa": cfg.strength, "optimizer": "adam",
                                                     "learning_rate": cfg.learning_rate, "check_every": cfg.check_every})
