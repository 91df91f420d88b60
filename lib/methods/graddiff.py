"""Gradient Difference (GradDiff; SIMU Appendix A.1): the training loop shared by FO-, SO- and SIMU-GradDiff.

Objective per step: L = -mean NLL(forget batch) + lam * mean NLL(retain batch), each mean over
the batch's scored tokens (SIMU's Table 4 lambda multiplies the retain term). Every step takes
the next batch of `batch_size` forget samples (cycling_batches, seed) and the next batch of
`batch_size` retain samples (its own cycling_batches, seed + 1), backpropagates both terms in
micro-batches of `family.batch_size` samples, steps the optimizer, then checks the stop rule
(every forget sample's memorization <= inputs.stop). It stops when that holds (also checked
before the first step) or after `max_epochs` passes over the forget set (ceil(n_forget /
batch_size) steps each), then reached=False.

Only the parameters handed to the optimizer get requires_grad (everything else is frozen, so
backward computes no gradient for it); flags are restored and .grad dropped afterwards.

SIMU's trainable set (SIMU 2.2, also SO-GradDiff's): every attention projection (input
projections and output projection, weights and biases) and every FFN down-projection weight.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from lib.core.adapter import FFNAdapter
from lib.methods import Inputs
from lib.methods.training import Progress, backward_mean, check_int, cycling_batches, nll_sum, optimise, stop_rule

NEEDS = ("forget", "retain")  # what every GradDiff method reads


def check_retain(inputs: Inputs) -> Any:
    """The retain set, or ValueError when GradDiff has none to descend on."""
    if inputs.retain is None or len(inputs.retain) == 0:
        raise ValueError(f"retain={inputs.retain!r} invalid; GradDiff needs a non-empty retain set")
    return inputs.retain


def step_loss_fn(model: nn.Module, inputs: Inputs, lam: float, batch_size: int) -> Callable[[int], float]:
    """A callable that backpropagates the GradDiff loss of the next forget/retain batches and returns it."""
    family, forget, retain = inputs.family, inputs.forget, check_retain(inputs)
    forget_order = cycling_batches(len(forget), batch_size, inputs.seed)
    retain_order = cycling_batches(len(retain), batch_size, inputs.seed + 1)

    def step_loss(_step: int) -> float:
        """-mean NLL of the forget batch + lam * mean NLL of the retain batch (backpropagated)."""
        ascent = backward_mean(family, forget, next(forget_order), lambda idx: -nll_sum(model, family, forget, idx))
        descent = backward_mean(family, retain, next(retain_order),
                                lambda idx: lam * nll_sum(model, family, retain, idx))
        return ascent + descent

    return step_loss


def train(model: nn.Module, inputs: Inputs, optimizer: torch.optim.Optimizer, lam: float, batch_size: int,
          max_epochs: int) -> Progress:
    """GradDiff steps with `optimizer` on its own parameters until the stop rule holds or max_epochs passes."""
    check_int("max_epochs", max_epochs, 1)
    step_loss = step_loss_fn(model, inputs, lam, batch_size)
    max_steps = max_epochs * math.ceil(len(inputs.forget) / batch_size)
    return optimise(model, step_loss, optimizer, max_steps, stop_rule(model, inputs))


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
