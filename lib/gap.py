"""Forget gap: how far a method's forget-set score is from the retrain reference's."""
from __future__ import annotations

import math

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
