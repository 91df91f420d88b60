"""Deliberate imagination (DI, Dong et al. 2024): self-distillation away from the forget tokens.

The teacher is the ORIGINAL model, read once before training (no second model): at every
scored position of every forget sample, its next-token logits with the ground-truth token's
logit lowered by κ (`strength`, 8 in NeuMuter B.4) give the target distribution
softmax(teacher − κ·onehot(gold)). The student (the model itself, all floating parameters,
Adam) minimises KL(target ‖ student), averaged over the batch's scored positions; batches
cycle in a seeded order like GA. Steps continue until every forget sample meets the Eq. 17
MA threshold, capped at `max_steps`. No learning rate is stated in the paper; 5e-5 is the
usual fine-tuning rate of Dong et al.'s setting.

Memory: the targets are kept as log-probabilities (T-1, V) per forget sample on the model's
device, about 1.3 GB in float32 for 32 samples of 200 tokens and a 50k vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.adapter import FFNAdapter
from lib.causal.batching import batches, logits_of
from lib.causal.methods.base import UnlearnInputs, UnlearnReport
from lib.causal.methods.training import (backward_mean, check_int, check_positive, cycling_batches, padded,
                                         training_report, until_forgotten)

name = "di"
reads = ("forget",)


@dataclass(frozen=True)
class Config:
    """DI hyper-parameters: κ, Adam learning rate, forget samples per step, step cap."""

    strength: float = 8.0  # κ, NeuMuter B.4
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_steps: int = 100

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_positive("strength", self.strength)
        check_positive("learning_rate", self.learning_rate)
        check_int("batch_size", self.batch_size, 1)
        check_int("max_steps", self.max_steps, 1)


def _wide(logits: Tensor) -> Tensor:
    """Logits in at least float32: half-precision soft-max targets lose the small probabilities."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def teacher_target(logits: Tensor, gold: Tensor, strength: float) -> Tensor:
    """log softmax(logits − κ·onehot(gold)) over the last axis: logits (..., V), gold (...) -> (..., V)."""
    lowered = logits.scatter_add(-1, gold[..., None], torch.full_like(logits[..., :1], -strength))
    return torch.log_softmax(lowered, dim=-1)


def teacher_targets(model: nn.Module, inputs: UnlearnInputs, strength: float) -> list[Tensor]:
    """Per forget sample, the target log-probabilities (T_i − 1, V) from the current model."""
    forget, out = inputs.forget, []
    with torch.no_grad():
        for part in batches(len(forget), inputs.batch_size):
            ids, mask = padded(model, forget, part, inputs.pad_id)
            target = teacher_target(_wide(logits_of(model, ids, mask)), ids[:, 1:], strength)  # (B, T-1, V)
            out += [target[r, : len(forget.ids[i]) - 1] for r, i in enumerate(part)]
    return out


def kl_sum(model: nn.Module, inputs: UnlearnInputs, targets: list[Tensor], index: list[int]) -> Tensor:
    """KL(target ‖ student) summed over the scored positions of forget rows `index` (differentiable)."""
    ids, mask = padded(model, inputs.forget, index, inputs.pad_id)
    student = torch.log_softmax(_wide(logits_of(model, ids, mask)), dim=-1)  # (B, T-1, V)
    target = nn.utils.rnn.pad_sequence([targets[i] for i in index], batch_first=True)  # (B, T-1, V)
    kl = (target.exp() * (target - student)).sum(-1)  # (B, T-1)
    return torch.where(mask[:, 1:].bool(), kl, 0.0).sum()


def run(model: nn.Module, adapter: FFNAdapter, inputs: UnlearnInputs, cfg: Config, seed: int) -> UnlearnReport:
    """Distil toward the κ-lowered teacher until every forget sample's MA <= thresholds.ma, or max_steps."""
    targets = teacher_targets(model, inputs, cfg.strength)
    order = cycling_batches(len(inputs.forget), cfg.batch_size, seed)

    def step_loss(_step: int) -> float:
        """Backpropagate the mean KL of the next batch."""
        return backward_mean(inputs.forget, next(order), inputs.batch_size,
                             lambda idx: kl_sum(model, inputs, targets, idx))

    progress = until_forgotten(model, inputs, step_loss, cfg.learning_rate, cfg.max_steps)
    return training_report(name, model, inputs, progress, {"kappa": cfg.strength, "optimizer": "adam",
                                                           "learning_rate": cfg.learning_rate})
