"""Metrics used by every track: forget gap, loss-based MIA distances, histograms, changed-parameter counts."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from torch import Tensor

METRICS = ("exposure", "mrr", "random_ppl")


def forget_gap(metric: str, value: float, retrain: float) -> float:
    """|value - retrain| for Exposure and MRR; |ln value - ln retrain| for RANDOM's perplexity.

    Pseudo-perplexity of a passphrase the model never saw is astronomically large (~1e6 on
    the default), so an absolute gap would hide every difference between methods.
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} unknown; allowed: {', '.join(METRICS)}")
    if metric != "random_ppl":
        return abs(value - retrain)
    if value <= 0 or retrain <= 0:
        raise ValueError(f"perplexities must be > 0, got value={value}, retrain={retrain}")
    return abs(math.log(value) - math.log(retrain))


def mia_distances(forget_nll: Tensor, valid_nll: Tensor) -> Tensor:
    """Loss-based MIA (NeuMuter App. B.3): |mean NLL of each forget sample - mean of the validation mean NLLs|."""
    for name, values in (("forget_nll", forget_nll), ("valid_nll", valid_nll)):
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor of per-sample mean NLLs, got shape "
                             f"{tuple(values.shape)}")
    return (forget_nll - valid_nll.mean()).abs()


def histogram(values: Sequence[float] | Tensor, bins: int, range: tuple[float, float]) -> dict[str, Any]:
    """Counts of `values` in `bins` equal bins over `range` (JSON-ready), with counts below and above it."""
    if bins < 1:
        raise ValueError(f"bins={bins} must be >= 1")
    low, high = float(range[0]), float(range[1])
    if not low < high:
        raise ValueError(f"range {range} must have low < high")
    array = np.asarray(values.tolist() if isinstance(values, Tensor) else list(values), dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError("histogram values contain NaN or infinity; only finite values are allowed")
    counts, edges = np.histogram(array, bins=bins, range=(low, high))  # the last bin includes `high`
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "below": int((array < low).sum()), "above": int((array > high).sum()), "n": int(array.size)}


def changed_parameters(before: dict[str, Tensor], after: dict[str, Tensor]) -> tuple[int, int]:
    """(scalar parameters that differ exactly, total scalar parameters) between two state dicts."""
    for key in before:
        if key not in after:
            raise ValueError(f"key {key!r} is in `before` but not in `after`; both need the same keys")
    for key in after:
        if key not in before:
            raise ValueError(f"key {key!r} is in `after` but not in `before`; both need the same keys")
    changed, total = 0, 0
    for key, old in before.items():
        new = after[key]
        if old.shape != new.shape:
            raise ValueError(f"key {key!r} changed shape from {tuple(old.shape)} to {tuple(new.shape)}")
        same = old == new.to(old.device)
        if old.is_floating_point():
            same |= old.isnan() & new.to(old.device).isnan()  # a NaN left untouched is no change
        changed += int((~same).sum())
        total += old.numel()
    return changed, total
