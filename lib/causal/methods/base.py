"""The interface every causal-LM unlearning method implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from torch import nn

from lib.adapter import FFNAdapter
from lib.causal.batching import Sequences, accuracy


@dataclass(frozen=True)
class Thresholds:
    """Eq. 17: a sample counts as forgotten when MA (and EL_n) are at most these held-out averages."""

    ma: float
    el: float


@dataclass(frozen=True)
class UnlearnInputs:
    """What a method may read; each method declares the fields it uses in its `reads`."""

    forget: Sequences  # the unlearned samples D_f
    thresholds: Thresholds
    pad_id: int
    neighbours: Sequences | None = None  # MLM rewrites of D_f (NeuMuter), K per forget sample, grouped by sample
    retain: Sequences | None = None  # samples of D_r (methods with a retain term)
    batch_size: int = 8


@dataclass(frozen=True)
class UnlearnReport:
    """What a method did: whether the stop criterion held, its final strength, its cost."""

    method: str
    reached: bool  # every forget sample's MA <= thresholds.ma when the method stopped
    strength: float  # the method's final strength (steps, tau, neuron count, ...), see `strength_name`
    strength_name: str
    steps: int  # optimizer steps (or evaluation rounds for training-free methods)
    trainable: int  # parameters the method could change
    changed: int  # parameters that differ from the input model afterwards (filled by the caller)
    total: int  # parameters of the model
    details: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    """A causal-LM unlearning method module (see lib/causal/methods/__init__.py)."""

    name: str
    reads: tuple[str, ...]

    def run(self, model: nn.Module, adapter: FFNAdapter, inputs: UnlearnInputs, cfg: Any, seed: int) -> UnlearnReport:
        """Edit `model` in place until the forget set meets the thresholds (or a cap); report what was done."""
        ...


def forgotten(model: nn.Module, inputs: UnlearnInputs) -> tuple[bool, float]:
    """The stop criterion: (every forget sample's MA <= threshold, the largest MA)."""
    ma = accuracy(model, inputs.forget, inputs.pad_id, inputs.batch_size)
    return bool((ma <= inputs.thresholds.ma).all()), float(ma.max())


def count_parameters(model: nn.Module, keep: Callable[[str], bool] = lambda _n: True) -> int:
    """Number of scalar parameters whose name passes `keep`."""
    return sum(p.numel() for n, p in model.named_parameters() if keep(n))
