"""Masked Sophia (SIMU, Eq. 3-7): a clipped diagonal-curvature step confined to a binary mask.

Per parameter entry, with gradient g, mask M (1 = critical) and state m, H (zeros at start):

    m' = b1*m + (1-b1)*g                 m <- M ? m' : m          (Eq. 5)
    H' = b2*H + (1-b2)*g^2               H <- M ? H' : H          (Eq. 4, 6)
    theta' = theta - lr*wd*theta - lr*clip(m / max(gamma*H, eps), -1, 1)     (Eq. 3, decoupled decay)
    theta <- M ? theta' : theta                                            (Eq. 7)

SIMU's curvature estimate is the EMA of g^2 (its Eq. 4), not Sophia's Hutchinson or
Gauss-Newton-Bartlett estimator, and it is refreshed every step; there is no bias
correction. The selection uses torch.where, so a non-critical entry keeps its exact old
bits, in the parameter and in both state tensors.

Masks: the param-group key "masks" is a list aligned with the group's "params", each entry
None (every entry critical) or a bool tensor broadcastable to that parameter's shape. The
constructor's `masks` argument is the default for groups that do not set the key, so pass
it together with a flat parameter list (one group). Parameters whose .grad is None are
skipped (state and values untouched).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

DEFAULT_BETAS = (0.965, 0.99)


def _finite(value: Any) -> bool:
    """True for a finite real number (bools excluded)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_hyper(lr: float, betas: Sequence[float], gamma: float, eps: float, weight_decay: float) -> None:
    """Raise ValueError naming the first Sophia hyper-parameter outside its allowed range."""
    if not _finite(lr) or lr <= 0:
        raise ValueError(f"lr={lr!r} invalid; allowed: a finite number > 0")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas={betas!r} invalid; allowed: two numbers in [0, 1)")
    if not _finite(gamma) or gamma <= 0:
        raise ValueError(f"gamma={gamma!r} invalid; allowed: a finite number > 0")
    if not _finite(eps) or eps <= 0:
        raise ValueError(f"eps={eps!r} invalid; allowed: a finite number > 0")
    if not _finite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} invalid; allowed: a finite number >= 0")


def _check_mask(mask: Tensor | None, param: Tensor, index: int) -> Tensor | None:
    """The mask on the parameter's device, or ValueError if not bool / not broadcastable to the parameter."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask {index} has type/dtype {getattr(mask, 'dtype', type(mask).__name__)}; "
                         "allowed: a torch.bool tensor")
    try:
        fits = torch.broadcast_shapes(mask.shape, param.shape) == param.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask {index} shape {tuple(mask.shape)} does not broadcast to parameter shape "
                         f"{tuple(param.shape)}")
    return mask.to(param.device)


class MaskedSophia(torch.optim.Optimizer):
    """Sophia with SIMU's binary mask on the first moment, the curvature EMA and the update (Eq. 3-7)."""

    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = DEFAULT_BETAS,
                 gamma: float = 0.01, eps: float = 1e-12, weight_decay: float = 0.0,
                 masks: Sequence[Tensor | None] | None = None) -> None:
        """Validate hyper-parameters; `masks` is the default "masks" of every group (see module docstring)."""
        check_hyper(lr, betas, gamma, eps, weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "gamma": gamma, "eps": eps, "weight_decay": weight_decay,
                    "masks": None if masks is None else list(masks)}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its hyper-parameters and its masks (one per parameter)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_hyper(group["lr"], group["betas"], group["gamma"], group["eps"], group["weight_decay"])
        masks = group["masks"] if group["masks"] is not None else [None] * len(group["params"])
        if len(masks) != len(group["params"]):
            raise ValueError(f"{len(masks)} masks for {len(group['params'])} parameters; allowed: one per "
                             "parameter (None = unmasked)")
        group["masks"] = [_check_mask(mask, p, i) for i, (mask, p) in enumerate(zip(masks, group["params"]))]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One masked Sophia step on every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param, mask in zip(group["params"], group["masks"]):
                if param.grad is not None:
                    self._update(param, mask, group)
        return loss

    def _update(self, param: Tensor, mask: Tensor | None, group: dict[str, Any]) -> None:
        """Eq. 5-7 for one parameter (mask None: every entry critical)."""
        grad, state = param.grad, self.state[param]
        if grad.is_sparse:
            raise ValueError("sparse gradients are not supported; allowed: dense gradients")
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        b1, b2 = group["betas"]
        lr, pick = group["lr"], (lambda new, old: new if mask is None else torch.where(mask, new, old))
        m = pick(state["exp_avg"] * b1 + grad * (1 - b1), state["exp_avg"])
        h = pick(state["hessian"] * b2 + grad * grad * (1 - b2), state["hessian"])
        ratio = (m / torch.clamp(h * group["gamma"], min=group["eps"])).clamp(-1.0, 1.0)
        new = param - param * (lr * group["weight_decay"]) - ratio * lr
        state["exp_avg"], state["hessian"], state["step"] = m, h, state["step"] + 1
        param.copy_(pick(new, param))
