"""What the neuron methods need on the causal tracks: the forget targets' statistics and the budget schedule.

SNKU reads Grad x Act attribution, the targets' FFN activations and each layer's clusters; DEPN (and so
APNEAP) reads Integrated Gradients per target. On a causal LM the targets are the secret span's tokens (the
natural analogue of the masked track's [MASK]ed secret tokens): one row per token, scored at the position
before it (lib.families.causal target_rows). The masked track computes these in stages of their own.
A method with a fixed neuron budget K (SNKU, DEPN, GARE, Random-K) meets a causal track's stop rule by K
doubling from its own `k` up to `k_max` (lib.methods.budget). `NeuronsConfig` is the params schema of
`causal.neurons` and `benchmarks.neurons`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lib.core.clustering import ClusterConfig
from lib.core.ig import IGConfig
from lib.core.params import Count, check_ranges

TARGETS = ("span", "all")


@dataclass(frozen=True)
class NeuronsConfig:
    """Targets, rows per cached task, targets per sample, the IG and clustering settings, the largest K tried."""

    targets: str = "span"  # span: the secret / answer tokens; all: every scored token
    shard_size: Count = 32  # rows per cached activations / attribution task
    max_targets: Count | None = None  # target rows per sample, evenly spaced (long answers); None = every target
    ig_max_targets: Count | None = None  # IG rows per sample, evenly spaced (a CPU knob); None = every target
    ig: IGConfig = field(default_factory=IGConfig)
    clustering: ClusterConfig = field(default_factory=ClusterConfig)
    k_max: Count = 4096  # a fixed-budget method's K doubles from its own k up to this under the stop rule

    def __post_init__(self) -> None:
        """Reject values the statistics cannot use."""
        check_ranges(self)
        if self.targets not in TARGETS:
            raise ValueError(f"targets={self.targets!r} invalid; allowed {TARGETS}")
