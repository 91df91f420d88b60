"""In-place weight edits of FFN neurons' output-weight vectors (SNKU Sec. 3.4, Eqs. 10-12).

A neuron's output-weight vector is its column of the FFN down-projection (length d_model);
the adapter hides the per-architecture layout (e.g. GPT-2's transposed Conv1D weight).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from lib.adapter import FFNAdapter

DECAY_MODES = ("one_minus_pow", "pow")


@dataclass(frozen=True)
class EditStats:
    """Size of one edit: neurons touched, weights overwritten, share of all model parameters."""

    n_neurons: int
    n_weights_edited: int
    fraction_weights_edited: float


def decay_factors(k: int, alpha: float, mode: str = "one_minus_pow") -> Tensor:
    """Decay factor per 1-based rank r: 1 - alpha**r ("one_minus_pow", Eq. 10) or alpha**r."""
    if mode not in DECAY_MODES:
        raise ValueError(f"mode={mode!r} is not supported; use one of {DECAY_MODES}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in (0, 1]")
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    ranks = torch.arange(1, k + 1, dtype=torch.float64)  # (k,)
    powers = torch.tensor(alpha, dtype=torch.float64) ** ranks  # (k,)
    return 1.0 - powers if mode == "one_minus_pow" else powers


def _check_neurons(adapter: FFNAdapter,
                   neurons: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validate (layer, neuron) pairs: in range and without duplicates."""
    pairs = [(int(layer), int(neuron)) for layer, neuron in neurons]
    bad = [p for p in pairs if not (0 <= p[0] < adapter.n_layers and 0 <= p[1] < adapter.d_ff)]
    if bad:
        raise ValueError(f"neurons {bad[:5]} out of range; allowed layer "
                         f"0..{adapter.n_layers - 1}, neuron 0..{adapter.d_ff - 1}")
    if len(set(pairs)) != len(pairs):
        n_dup = len(pairs) - len(set(pairs))
        raise ValueError(f"neurons contains {n_dup} duplicate (layer, neuron) pairs; each once")
    return pairs


def _by_layer(pairs: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """Map layer -> list of rank positions (0-based) of its neurons in `pairs`."""
    ranks: dict[int, list[int]] = defaultdict(list)
    for rank, (layer, _) in enumerate(pairs):
        ranks[layer].append(rank)
    return ranks


def _stats(adapter: FFNAdapter, n_neurons: int) -> EditStats:
    """EditStats for `n_neurons` full output-weight vectors."""
    total = sum(p.numel() for p in adapter.model.parameters())
    n_weights = n_neurons * adapter.d_model
    return EditStats(n_neurons=n_neurons, n_weights_edited=n_weights,
                     fraction_weights_edited=n_weights / total if total else 0.0)


def edit_noise(n: int, d_model: int, sigma: float, generator: torch.Generator) -> Tensor:
    """Noise rows (n, d_model) ~ N(0, sigma^2 I), row r for rank r, drawn on CPU in float32."""
    noise = torch.randn((n, d_model), generator=generator, dtype=torch.float32)  # (n, d_model)
    return noise * sigma


def decay_with_noise(adapter: FFNAdapter, neurons: Sequence[tuple[int, int]], alpha: float,
                     sigma: float, generator: torch.Generator,
                     mode: str = "one_minus_pow") -> EditStats:
    """In place: w_new = delta_r * w_old + eps_r for the neuron of rank r (Eqs. 10-12)."""
    if not sigma >= 0.0:
        raise ValueError(f"sigma={sigma} must be >= 0 (absolute noise std)")
    pairs = _check_neurons(adapter, neurons)
    delta = decay_factors(len(pairs), alpha, mode).to(torch.float32)  # (K,)
    # One CPU draw in rank order makes the edit identical on every device for a given seed.
    eps = edit_noise(len(pairs), adapter.d_model, sigma, generator)  # (K, d_model)
    with torch.no_grad():
        for layer, ranks in _by_layer(pairs).items():
            idx = torch.tensor([pairs[r][1] for r in ranks], dtype=torch.long)  # (k_l,)
            rows = torch.tensor(ranks, dtype=torch.long)  # (k_l,)
            old = adapter.get_columns(layer, idx)  # (k_l, d_model)
            # bf16/fp16 weights are edited in fp32 and rounded once, on write-back.
            dtype = torch.promote_types(old.dtype, torch.float32)
            scale = delta[rows, None].to(old.device, dtype)  # (k_l, 1)
            new = scale * old.to(dtype) + eps[rows].to(old.device, dtype)  # (k_l, d_model)
            adapter.set_columns(layer, idx, new)
    return _stats(adapter, len(pairs))


def zero_neurons(adapter: FFNAdapter, neurons: Sequence[tuple[int, int]]) -> EditStats:
    """In place: set the output-weight vectors of the given neurons to zero."""
    pairs = _check_neurons(adapter, neurons)
    with torch.no_grad():
        for layer, ranks in _by_layer(pairs).items():
            idx = torch.tensor([pairs[r][1] for r in ranks], dtype=torch.long)  # (k_l,)
            adapter.set_columns(layer, idx, torch.zeros(len(ranks), adapter.d_model))
    return _stats(adapter, len(pairs))
