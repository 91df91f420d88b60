"""Shared pieces of the gradient-based causal-LM baselines (GA, SGA, TA's fine-tune, DI).

Every method trains ALL floating parameters with Adam (no weight decay: a decay term would
move weights that the method's objective does not ask to move). The model stays in the
mode the caller gave it (eval mode in this project): dropout stays off, so a step is a
deterministic function of the seed and the MA checks between steps see the same network
that is being trained.

A "batch" is `batch_size` forget samples; its loss is the mean over the batch's scored
tokens, accumulated over micro-batches of `UnlearnInputs.batch_size` samples so that a
large batch never needs more memory than one evaluation batch.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lib.causal.batching import Sequences, accuracy, batches, pad, token_nll
from lib.causal.methods.base import UnlearnInputs, UnlearnReport, count_parameters, forgotten

SummedLoss = Callable[[list[int]], Tensor]  # rows of the forget set -> loss summed over their scored tokens


@dataclass(frozen=True)
class Progress:
    """What a training loop did: stop criterion, steps taken, max MA after 0..steps steps, loss per step."""

    reached: bool
    steps: int
    max_ma: list[float]
    loss: list[float] = field(default_factory=list)


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless `value` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} invalid; allowed: a finite number > 0")


def check_int(name: str, value: int, low: int) -> None:
    """Raise ValueError unless `value` is an int >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} invalid; allowed: an integer >= {low}")


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def padded(model: nn.Module, seqs: Sequences, index: Sequence[int], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids and mask (B, T) of rows `index`, on the model's device."""
    ids, mask = pad([seqs.ids[i] for i in index], pad_id)
    device = device_of(model)
    return ids.to(device), mask.to(device)


def token_count(seqs: Sequences, index: Sequence[int]) -> int:
    """Number of scored tokens (every token but the first) of rows `index`."""
    return sum(len(seqs.ids[i]) - 1 for i in index)


def nll_sum(model: nn.Module, seqs: Sequences, index: list[int], pad_id: int) -> Tensor:
    """Causal-LM NLL summed over the scored tokens of rows `index` (differentiable scalar)."""
    nll, _valid = token_nll(model, *padded(model, seqs, index, pad_id))  # (B, T-1), zero at padding
    return nll.sum()


def backward_mean(seqs: Sequences, index: list[int], micro: int, summed: SummedLoss) -> float:
    """Backpropagate summed(index) / scored tokens in micro-batches; return that mean loss."""
    n_tokens, total = token_count(seqs, index), 0.0
    for part in batches(len(index), micro):
        loss = summed([index[j] for j in part]) / n_tokens
        loss.backward()
        total += float(loss.detach())
    return total


def cycling_batches(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of `size` sample indices; each pass over the n samples is a fresh seeded permutation."""
    check_int("batch_size", size, 1)
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for part in batches(n, size):
            yield [order[j] for j in part]


@contextmanager
def all_trainable(model: nn.Module) -> Iterator[list[nn.Parameter]]:
    """Yield every floating parameter (tied ones once) with requires_grad on; restore flags, drop grads after."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield params
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None  # no gradient buffers left on the returned model


def optimise(model: nn.Module, step_loss: Callable[[int], float], lr: float, max_steps: int,
             stop: Callable[[], tuple[bool, float]] | None = None) -> Progress:
    """Adam on all parameters; step_loss(step) backpropagates, returns its loss; until stop()[0] or max_steps."""
    with all_trainable(model) as params:
        optimizer = torch.optim.Adam(params, lr=lr)
        done, worst = stop() if stop is not None else (False, math.nan)
        max_ma, losses = [worst], []
        while not done and len(losses) < max_steps:
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss(len(losses)))
            optimizer.step()
            if stop is not None:
                done, worst = stop()
                max_ma.append(worst)
    return Progress(done, len(losses), max_ma, losses)


def until_forgotten(model: nn.Module, inputs: UnlearnInputs, step_loss: Callable[[int], float], lr: float,
                    max_steps: int) -> Progress:
    """Train until `forgotten(model, inputs)` holds (checked before and after every step) or max_steps."""
    return optimise(model, step_loss, lr, max_steps, stop=lambda: forgotten(model, inputs))


def final_ma(model: nn.Module, inputs: UnlearnInputs) -> list[float]:
    """Per-sample MA of the forget set, as plain floats."""
    return [float(v) for v in accuracy(model, inputs.forget, inputs.pad_id, inputs.batch_size)]


def training_report(name: str, model: nn.Module, inputs: UnlearnInputs, progress: Progress,
                    details: dict[str, Any]) -> UnlearnReport:
    """Report of a train-until-forgotten method: strength = steps; history = max MA after 0..steps steps."""
    total = count_parameters(model)
    details = {"ma": final_ma(model, inputs), "history": {"steps": list(range(progress.steps + 1)),
                                                          "max_ma": progress.max_ma},
               "loss": progress.loss, **details}
    return UnlearnReport(method=name, reached=progress.reached, strength=float(progress.steps),
                         strength_name="steps", steps=progress.steps, trainable=total, changed=0, total=total,
                         details=details)
