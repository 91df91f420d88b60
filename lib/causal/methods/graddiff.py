"""Gradient Difference (GradDiff; SIMU Appendix A.1): the training loop shared by FO-, SO- and SIMU-GradDiff.

Objective per step: L = -mean NLL(forget batch) + lam * mean NLL(retain batch), each mean over
the batch's scored tokens (SIMU's Table 4 lambda multiplies the retain term). Every step takes
the next batch of `batch_size` forget samples (cycling_batches, seed) and the next batch of
`batch_size` retain samples (its own cycling_batches, seed + 1), backpropagates both terms in
micro-batches of UnlearnInputs.batch_size samples, steps the optimizer, then checks the stop
criterion (`forgotten`: every forget MA <= thresholds.ma). It stops when that holds (also
checked before the first step) or after `max_epochs` passes over the forget set
(ceil(n_forget / batch_size) steps each), then reached=False.

Only the parameters handed to the optimizer get requires_grad (everything else is frozen, so
backward computes no gradient for it); flags are restored and .grad dropped afterwards.

SIMU's trainable set (SIMU 2.2, also SO-GradDiff's): every attention projection (input
projections and output projection, weights and biases) and every FFN down-projection weight.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from lib.adapter import FFNAdapter
from lib.causal.batching import Sequences
from lib.causal.methods.base import UnlearnInputs, forgotten
from lib.causal.methods.training import Progress, backward_mean, check_int, cycling_batches, nll_sum

READS = ("forget", "retain")  # what every GradDiff method reads


def check_retain(inputs: UnlearnInputs) -> Sequences:
    """The retain set, or ValueError when GradDiff has none to descend on."""
    if inputs.retain is None or len(inputs.retain) == 0:
        raise ValueError(f"retain={inputs.retain!r} invalid; GradDiff needs a non-empty retain set")
    return inputs.retain


@contextmanager
def only_trainable(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
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


def step_loss_fn(model: nn.Module, inputs: UnlearnInputs, lam: float, batch_size: int,
                 seed: int) -> Callable[[], float]:
    """A callable that backpropagates the GradDiff loss of the next forget/retain batches and returns it."""
    forget, retain = inputs.forget, check_retain(inputs)
    forget_order = cycling_batches(len(forget), batch_size, seed)
    retain_order = cycling_batches(len(retain), batch_size, seed + 1)

    def step_loss() -> float:
        """-mean NLL of the forget batch + lam * mean NLL of the retain batch (backpropagated)."""
        ascent = backward_mean(forget, next(forget_order), inputs.batch_size,
                               lambda idx: -nll_sum(model, forget, idx, inputs.pad_id))
        descent = backward_mean(retain, next(retain_order), inputs.batch_size,
                                lambda idx: lam * nll_sum(model, retain, idx, inputs.pad_id))
        return ascent + descent

    return step_loss


def train(model: nn.Module, inputs: UnlearnInputs, optimizer: torch.optim.Optimizer, lam: float,
          batch_size: int, max_epochs: int, seed: int) -> Progress:
    """GradDiff steps with `optimizer` on its own parameters until forgotten or max_epochs passes."""
    check_int("max_epochs", max_epochs, 1)
    step_loss = step_loss_fn(model, inputs, lam, batch_size, seed)
    max_steps = max_epochs * math.ceil(len(inputs.forget) / batch_size)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with only_trainable(model, params):
        done, worst = forgotten(model, inputs)
        max_ma, losses = [worst], []
        while not done and len(losses) < max_steps:
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss())
            optimizer.step()
            done, worst = forgotten(model, inputs)
            max_ma.append(worst)
    return Progress(done, len(losses), max_ma, losses)


def attention_parameters(adapter: FFNAdapter) -> list[nn.Parameter]:
    """Weights and biases of every attention input and output projection, in layer order."""
    out: list[nn.Parameter] = []
    for layer in range(adapter.n_layers):
        modules = adapter.attention_inputs(layer) + [adapter.attention_output(layer)]
        if not adapter.attention_inputs(layer) or modules[-1] is None:
            raise ValueError(f"layer {layer}: attention projections unknown for {adapter.spec}; allowed: an "
                             "architecture whose FFNSpec names attn_in and attn_out")
        out += [p for module in modules for p in (module.weight, getattr(module, "bias", None))
                if isinstance(p, nn.Parameter)]
    return out


def down_weights(adapter: FFNAdapter) -> list[nn.Parameter]:
    """Every layer's FFN down-projection weight (biases excluded)."""
    return [adapter.down_proj(layer).weight for layer in range(adapter.n_layers)]


def count(params: list[nn.Parameter]) -> int:
    """Scalar entries of `params`."""
    return sum(p.numel() for p in params)
