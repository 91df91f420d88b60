"""Random-neuron control: K neurons drawn uniformly over all layers, then SNKU's exact edit."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lib.adapter import FFNAdapter
from lib.editing import DECAY_MODES, decay_with_noise
from lib.methods.base import EditReport, MethodInputs

name = "random"
selection_stages: tuple[str, ...] = ()  # draws neurons without any upstream statistics
reads: tuple[str, ...] = ()  # the MethodInputs fields run() uses (the experiments cache key)


@dataclass(frozen=True)
class Config:
    """Neuron budget and the decay-with-noise edit parameters shared with SNKU."""

    k: int = 300
    decay_mode: str = "one_minus_pow"
    alpha: float = 0.99
    sigma: float = 0.05

    def __post_init__(self) -> None:
        """Reject values the edit cannot use."""
        if self.k <= 0:
            raise ValueError(f"k={self.k} must be positive")
        if self.decay_mode not in DECAY_MODES:
            raise ValueError(f"decay_mode={self.decay_mode!r} invalid; allowed {DECAY_MODES}")
        if not 0.0 < self.alpha <= 1.0 or not self.sigma >= 0:
            raise ValueError(f"alpha={self.alpha} must lie in (0, 1] and sigma={self.sigma} be >= 0")


def draw_neurons(n_layers: int, d_ff: int, k: int, seed: int) -> tuple[tuple[int, int], ...]:
    """K distinct (layer, neuron) pairs, uniform over all layers, in random order."""
    total = n_layers * d_ff
    if not 0 < k <= total:
        raise ValueError(f"k={k} must lie in 1..{total} (n_layers * d_ff)")
    flat = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]  # (k,)
    return tuple((int(i) // d_ff, int(i) % d_ff) for i in flat)


def run(model: nn.Module, adapter: FFNAdapter, inputs: MethodInputs, cfg: Config) -> EditReport:
    """Edit K random neurons of `model` in place with the same decay-with-noise as SNKU."""
    start = time.perf_counter()
    neurons = draw_neurons(adapter.n_layers, adapter.d_ff, cfg.k, inputs.seed)
    selected = time.perf_counter()
    # A fresh generator with the same seed gives the noise SNKU would draw: only the choice differs.
    stats = decay_with_noise(adapter, neurons, cfg.alpha, cfg.sigma,
                             torch.Generator().manual_seed(inputs.seed), cfg.decay_mode)
    return EditReport(method=name, category=inputs.category, neurons=neurons, clusters_used=None,
                      n_weights_edited=stats.n_weights_edited,
                      fraction_weights_edited=stats.fraction_weights_edited,
                      selection_seconds=selected - start, edit_seconds=time.perf_counter() - selected)
