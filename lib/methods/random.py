"""Random-neuron control: K neurons drawn uniformly over all layers, then SNKU's exact edit."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.editing import DecayEdit, decay_with_noise
from lib.methods import Inputs, Report

label = "Random-K"  # the name every report prints
families = ("masked", "causal")
needs: tuple[str, ...] = ()
kind = "neurons"


@dataclass(frozen=True)
class Config(DecayEdit):
    """Neuron budget and the decay-with-noise edit parameters shared with SNKU (lib.core.editing.DecayEdit)."""


def draw_neurons(n_layers: int, d_ff: int, k: int, seed: int) -> tuple[tuple[int, int], ...]:
    """K distinct (layer, neuron) pairs, uniform over all layers, in random order."""
    total = n_layers * d_ff
    if not 0 < k <= total:
        raise ValueError(f"k={k} must lie in 1..{total} (n_layers * d_ff)")
    flat = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]  # (k,)
    return tuple((int(i) // d_ff, int(i) % d_ff) for i in flat)


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Edit K random neurons of `model` in place with the same decay-with-noise as SNKU."""
    adapter = FFNAdapter.for_model(model)
    start = time.perf_counter()
    neurons = draw_neurons(adapter.n_layers, adapter.d_ff, cfg.k, inputs.seed)
    selected = time.perf_counter()
    # A fresh generator with the same seed gives the noise SNKU would draw: only the choice differs.
    decay_with_noise(adapter, neurons, cfg.alpha, cfg.sigma, torch.Generator().manual_seed(inputs.seed),
                     cfg.decay_mode)
    return Report(strength=float(len(neurons)), strength_name="neurons", steps=1,
                  trainable=len(neurons) * adapter.d_model, neurons=neurons, selection_seconds=selected - start,
                  edit_seconds=time.perf_counter() - selected)
