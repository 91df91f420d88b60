"""Relearning: an attacker who owns the weights fine-tunes the unlearned model on a little data and measures
whether the forgotten items come back (Łucki et al. 2024; Deeb & Roger 2024).

The attacker trains a copy (the model given is left as it is) with AdamW on one data source: retain data
only, or a held-out part of the forget set, and measures the rest of the forget set after each checkpoint's
number of steps. A forgetting that holds stays forgotten; a suppressed one returns within a few steps, far
faster than a retrained model, which never held the items, can learn them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from lib.core.finetune import BatchLoss
from lib.core.params import Count, Natural, Positive, check_ranges
from lib.methods.training import cycling_batches, floating_parameters, trainable


@dataclass(frozen=True)
class RelearnConfig:
    """The attacker's budget: checkpoints (steps), rate, batch size, seed."""

    steps: tuple[Count, ...] = (10, 50, 100)
    learning_rate: Positive = 1e-4
    batch_size: Count = 8
    seed: Natural = 0

    def __post_init__(self) -> None:
        """Every field within its range; checkpoints increasing."""
        check_ranges(self)
        if not self.steps or list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"steps={list(self.steps)} invalid; allowed: increasing integers >= 1")


def adamw(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW without decay, fused where torch has a fused kernel for the parameters' device (CPU, CUDA): a relearning
    step on every weight of a 135M model takes about 0.55 s less than with the per-tensor loop (perf/attacks.py)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices  # torch's own list

    fused = all(p.device.type in _get_fused_kernels_supported_devices() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)


def relearn(model: nn.Module, make_loss: Callable[[nn.Module], BatchLoss], n_items: int, cfg: RelearnConfig,
            measure: Callable[[nn.Module], dict[str, Any]], start: dict[str, Any] | None = None
            ) -> list[dict[str, Any]]:
    """Train a copy on the attacker's n_items (make_loss(copy) gives their batch loss) and measure(copy) at step 0
    (`start` when the caller has measure(model) already) and at each checkpoint: [{"steps": s, **measure}]. The
    model given is not changed."""
    if n_items < 1:
        raise ValueError("relearning needs at least one item")
    attacker = copy.deepcopy(model)
    batch_loss, params = make_loss(attacker), floating_parameters(attacker)
    optimizer = adamw(params, cfg.learning_rate)
    attacker.eval()  # dropout off: the attack is measured, not regularised
    out = [{"steps": 0, **(measure(attacker) if start is None else start)}]
    batches = cycling_batches(n_items, cfg.batch_size, cfg.seed)
    done = 0
    for target in cfg.steps:
        with trainable(attacker, params):
            while done < target:
                optimizer.zero_grad(set_to_none=True)
                batch_loss(next(batches)).backward()
                optimizer.step()
                done += 1
        with torch.no_grad():
            out.append({"steps": done, **measure(attacker)})
    return out
