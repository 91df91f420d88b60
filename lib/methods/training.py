"""Shared pieces of the training-based methods (GA, SGA, TA's fine-tune, DI, NPO, the GradDiff family).

Losses come from the model family (`inputs.family`), so a loop written here runs on masked and causal
LMs alike. Unless a method says otherwise it trains ALL floating parameters with Adam (no weight decay:
a decay term would move weights the objective does not ask to move). The model stays in the mode the
caller gave it (eval mode in this project): dropout stays off, so a step is a deterministic function of
the seed and the stop checks between steps see the same network that is being trained.

A "batch" is `batch_size` forget samples; its loss is the mean over the batch's scored tokens,
accumulated over micro-batches of `family.batch_size` samples so that a large batch never needs more
memory than one evaluation batch.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lib.methods import Family, Inputs, Report

SummedLoss = Callable[[list[int]], Tensor]  # samples -> loss summed over their scored tokens
Stop = Callable[[], tuple[bool, float]]  # -> (stop rule holds, largest memorization)


@dataclass(frozen=True)
class Progress:
    """What a training loop did: stop rule, steps taken, max memorization after 0..steps steps, loss per step."""

    reached: bool
    steps: int
    max_ma: list[float]
    loss: list[float] = field(default_factory=list)
    checked: list[int] = field(default_factory=list)  # the step after which each max_ma entry was measured


def check_int(name: str, value: int, low: int) -> None:
    """Raise ValueError unless `value` is an int >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} invalid; allowed: an integer >= {low}")


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def count_parameters(model: nn.Module, keep: Callable[[str], bool] = lambda _n: True) -> int:
    """Number of scalar parameters (tied ones once) whose name passes `keep`."""
    return sum(p.numel() for n, p in model.named_parameters() if keep(n))


def forgotten(model: nn.Module, inputs: Inputs) -> tuple[bool, float]:
    """The stop rule: (every forget sample's memorization <= inputs.stop, the largest memorization)."""
    scores = inputs.family.memorization(model, inputs.forget)
    return inputs.stop is not None and bool((scores <= inputs.stop).all()), float(scores.max())


def stop_rule(model: nn.Module, inputs: Inputs) -> Stop | None:
    """The stop test of `inputs`, or None when the method runs at its configured strength."""
    return None if inputs.stop is None else lambda: forgotten(model, inputs)


def nll_sum(model: nn.Module, family: Family, samples: Any, index: list[int]) -> Tensor:
    """The family's NLL summed over the scored tokens of samples `index` (differentiable scalar)."""
    return family.nll_sum(model, samples, index)


def backward_mean(family: Family, samples: Any, index: list[int], summed: SummedLoss) -> float:
    """Backpropagate summed(index) / scored tokens in micro-batches; return that mean loss."""
    n_tokens, total = family.count(samples, index), 0.0
    for start in range(0, len(index), family.batch_size):
        loss = summed(index[start:start + family.batch_size]) / n_tokens
        loss.backward()
        total += float(loss.detach())
    return total


def cycling_batches(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of `size` sample indices; each pass over the n samples is a fresh seeded permutation."""
    check_int("batch_size", size, 1)
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, size):
            yield order[start:start + size]


@contextmanager
def trainable(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Exactly `params` require grad while open; restore every flag and drop every .grad after."""
    everything = list(model.parameters())
    chosen = {id(p) for p in params}
    flags = [p.requires_grad for p in everything]
    try:
        for p in everything:
            p.requires_grad_(id(p) in chosen)
        yield
    finally:
        for p, flag in zip(everything, flags):
            p.requires_grad_(flag)
            p.grad = None  # no gradient buffers left on the returned model


def floating_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every floating parameter (tied ones once)."""
    return [p for p in model.parameters() if p.is_floating_point()]


def optimise(model: nn.Module, step_loss: Callable[[int], float], optimizer: torch.optim.Optimizer, max_steps: int,
             stop: Stop | None = None, check_every: int = 1) -> Progress:
    """`optimizer` steps; step_loss(step) backpropagates and returns its loss; until stop()[0] or max_steps.

    The stop rule is checked before the first step, after every `check_every`-th step and after the last one
    (a check scores the whole forget set, which can cost more than a step)."""
    check_int("check_every", check_every, 1)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with trainable(model, params):
        done, worst = stop() if stop is not None else (False, math.nan)
        checked, max_ma, losses = [0], [worst], []
        while not done and len(losses) < max_steps:
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss(len(losses)))
            optimizer.step()
            if stop is not None and (len(losses) % check_every == 0 or len(losses) == max_steps):
                done, worst = stop()
                checked.append(len(losses))
                max_ma.append(worst)
    return Progress(done, len(losses), max_ma, losses, checked if stop is not None else [])


def adam_all(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam on every floating parameter."""
    return torch.optim.Adam(floating_parameters(model), lr=lr)


def until_forgotten(model: nn.Module, inputs: Inputs, step_loss: Callable[[int], float], lr: float,
                    max_steps: int, check_every: int = 1) -> Progress:
    """Adam on all parameters until the stop rule holds (checked every `check_every` steps) or max_steps."""
    return optimise(model, step_loss, adam_all(model, lr), max_steps, stop_rule(model, inputs), check_every)


def forget_retain_steps(model: nn.Module, inputs: Inputs, forget_sum: SummedLoss, batch_size: int,
                        retain_weight: float, lr: float, max_steps: int, name: str) -> Progress:
    """Adam until forgotten on forget_sum(batch) / batch size, plus retain_weight x the retain set's mean token NLL.

    forget_sum(index) is a method's loss summed over forget samples `index` (NPO, SimNPO); batches of
    `batch_size` cycle in a seeded order, micro-batched by the family's batch size."""
    family, forget, retain = inputs.family, inputs.forget, inputs.retain
    if retain_weight > 0 and (retain is None or len(retain) == 0):
        raise ValueError(f"{name} with retain_weight > 0 needs a non-empty retain set; allowed: retain_weight 0")
    forget_order = cycling_batches(len(forget), batch_size, inputs.seed)
    retain_order = cycling_batches(len(retain), batch_size, inputs.seed + 1) if retain_weight > 0 else None

    def step_loss(_step: int) -> float:
        """Backpropagate the batch's mean forget loss (and the weighted retain NLL); return it."""
        index, total = next(forget_order), 0.0
        for start in range(0, len(index), family.batch_size):
            loss = forget_sum(index[start:start + family.batch_size]) / len(index)
            loss.backward()
            total += float(loss.detach())
        if retain_order is not None:
            total += backward_mean(family, retain, next(retain_order),
                                   lambda idx: retain_weight * nll_sum(model, family, retain, idx))
        return total

    return until_forgotten(model, inputs, step_loss, lr, max_steps)


def final_ma(model: nn.Module, inputs: Inputs) -> list[float]:
    """Per-sample memorization of the forget set, as plain floats."""
    return [float(v) for v in inputs.family.memorization(model, inputs.forget)]


def training_report(model: nn.Module, inputs: Inputs, progress: Progress, details: dict[str, Any],
                    trainable_count: int | None = None) -> Report:
    """Report of a train-until-forgotten method: strength = steps; history = max memorization after each step."""
    steps = progress.checked or list(range(progress.steps + 1))
    details = {"ma": final_ma(model, inputs), "history": {"steps": steps, "max_ma": progress.max_ma},
               "loss": progress.loss, **details}
    return Report(reached=progress.reached if inputs.stop is not None else None,
                  strength=float(progress.steps), strength_name="steps", steps=progress.steps,
                  trainable=count_parameters(model) if trainable_count is None else trainable_count, details=details)
