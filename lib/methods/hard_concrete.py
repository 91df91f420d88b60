"""Hard-concrete gates on FFN neurons (Louizos et al., 2018), as NeuMuter uses them (paper Eq. 10-12).

One trainable log α per FFN neuron of each masked layer. With u ~ U(0, 1):
  s = σ((log u − log(1 − u) + log α) / β)        (Eq. 10, `sample`; `deterministic` uses s = σ(log α))
  m = min(1, max(0, s (ζ − γ) + γ))               (Eq. 11), γ = −0.1, ζ = 1.1
  R = 1 − mean σ(log α − β log(−γ / ζ))           (Eq. 12, `l0`; the mean is the paper's 1/N_m sum)

Sign of R: σ(log α − β log(−γ/ζ)) is the probability that a gate is open, so Eq. 12 as written is
1 − (expected share of open gates). NeuMuter minimises +η R (Eq. 13), which pushes gates OPEN:
it penalises closing gates rather than rewarding sparsity. That matches the authors' public code
("R penalizes closing gates"); we implement Eq. 12 exactly as written.

Initialisation: log α = log 11 gives σ = 11/12, so the deterministic gate is exactly 1 and the
masked model equals the original. The stretch width ζ − γ is written as the literal 1.2 because
1.1 − (−0.1) is 1.2000000000000002 in binary: with it the unclamped float64 gate would be
1 + 2e-16, the clamp would swallow every gradient and a deterministic gate could never close.
With 1.2 the unclamped gate is exactly 1.0 in float32 and float64, where torch's clamp (inclusive
bounds) still passes the gradient.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter

GAMMA = -0.1  # lower stretch limit γ
ZETA = 1.1  # upper stretch limit ζ
WIDTH = 1.2  # ζ − γ as an exact decimal literal (see module docstring)
U_EPS = 1e-6  # u is kept in [U_EPS, 1 − U_EPS] so log u and log(1 − u) stay finite


def stretch(s: Tensor) -> Tensor:
    """Eq. 11: stretch s in (0, 1) to (γ, ζ) and clamp to [0, 1]."""
    return (s * WIDTH + GAMMA).clamp(0.0, 1.0)


class HardConcreteMask(nn.Module):
    """Hard-concrete gates for the FFN neurons of `layers`: parameter log_alpha (len(layers), d_ff)."""

    def __init__(self, layers: Sequence[int], d_ff: int, beta: float = 0.3,
                 init_log_alpha: float = math.log(11.0), dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        """One log α per neuron, all equal to `init_log_alpha`; `beta` is the temperature."""
        super().__init__()
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise ValueError(f"layers={tuple(layers)!r} invalid; allowed: distinct non-negative ints, at least one")
        if d_ff < 1:
            raise ValueError(f"d_ff={d_ff} invalid; allowed: >= 1")
        if not beta > 0:
            raise ValueError(f"beta={beta} invalid; allowed: > 0")
        if not math.isfinite(init_log_alpha):
            raise ValueError(f"init_log_alpha={init_log_alpha} invalid; allowed: a finite float")
        self.layers = tuple(int(layer) for layer in layers)
        self.beta = float(beta)
        self.log_alpha = nn.Parameter(torch.full((len(layers), d_ff), float(init_log_alpha), dtype=dtype,
                                                 device=device))

    def sample(self, generator: torch.Generator) -> Tensor:
        """Eq. 10-11: one stochastic gate per neuron (L, d_ff), u drawn from `generator`."""
        la = self.log_alpha
        u = torch.rand(la.shape, generator=generator, dtype=la.dtype, device=la.device)
        u = u.clamp(U_EPS, 1.0 - U_EPS)
        return stretch(torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / self.beta))

    def deterministic(self) -> Tensor:
        """Eq. 11 with s = σ(log α): the test-time gate per neuron (L, d_ff)."""
        return stretch(torch.sigmoid(self.log_alpha))

    def l0(self) -> Tensor:
        """Eq. 12: R = 1 − mean open probability (a scalar; see the module docstring for its sign)."""
        shift = self.beta * math.log(-GAMMA / ZETA)
        return 1.0 - torch.sigmoid(self.log_alpha - shift).mean()


@contextmanager
def gated(adapter: FFNAdapter, layers: Sequence[int], gates: Tensor) -> Iterator[None]:
    """Multiply each of `layers`' down-proj input (B, T, d_ff) by its row of `gates` (len(layers), d_ff)."""
    if tuple(gates.shape) != (len(layers), adapter.d_ff):
        raise ValueError(f"gates shape {tuple(gates.shape)} invalid; expected ({len(layers)}, {adapter.d_ff})")
    row = {int(layer): i for i, layer in enumerate(layers)}
    if len(row) != len(layers):
        raise ValueError(f"layers={tuple(layers)!r} has duplicates; allowed: distinct layer indices")

    def apply(layer: int, x: Tensor) -> Tensor:
        """Scale x (B, T, d_ff) by this layer's gate vector."""
        return x * gates[row[layer]].to(device=x.device, dtype=x.dtype)

    with adapter.patch(apply, row.keys()):
        yield
