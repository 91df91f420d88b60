"""The SNKU paper's experiments as a flat list of runs (pure: params in, run specs out).

Each run is one method's edit of the fine-tuned model on one category with some config
overrides and a seed; `experiment` names the table or figure it belongs to:
seeds (Table 1, mean +- std), budget (Fig 2/3), noise (Fig 4), decay (Fig 5),
scoring (Appendix C, HYB/SUM/AVG) and seesaw (forget a subset, measure the rest).
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from lib.core.params import Count, Natural, NonNegative, OpenFraction, ParamsError, PositiveFraction, check_ranges
from lib.data.records import CATEGORIES, PipelineConfig, SecretRecord
from lib.methods import get

EXPERIMENTS = ("seeds", "budget", "noise", "decay", "scoring", "seesaw")
SCORINGS = ("hyb", "sum", "avg")


def _check_category(where: str, category: str) -> None:
    """A known category."""
    if category not in CATEGORIES:
        raise ValueError(f"{where}.category = {category!r}; allowed: {list(CATEGORIES)}")


def check_budget(methods: Sequence[str], sections: Iterable[str]) -> None:
    """Budget-sweep methods have a section under `methods` and a neuron budget k; ParamsError names the first not."""
    sections = sorted(sections)
    with_k = [m for m in sections if "k" in {f.name for f in dataclasses.fields(get(m).Config)}]
    for name in methods:
        if name not in with_k:
            raise ParamsError(f"experiments.budget.methods contains {name!r}; allowed: methods with a section "
                              f"under methods and a neuron budget k: {with_k}")


@dataclass(frozen=True)
class BudgetConfig:
    """Neuron-budget sweep (SNKU paper Fig 2/3): these methods at each K, every category."""

    methods: tuple[str, ...]
    ks: tuple[Count, ...]

    def __post_init__(self) -> None:
        """Positive budgets, at least one."""
        check_ranges(self)
        if not self.ks:
            raise ValueError(f"ks = {list(self.ks)} must be non-empty and positive")


@dataclass(frozen=True)
class NoiseConfig:
    """Noise ablation (Fig 4): SNKU on one category at fixed k and alpha, sigma swept."""

    category: str
    k: Count
    alpha: PositiveFraction  # the decay edit's alpha
    sigmas: tuple[NonNegative, ...]

    def __post_init__(self) -> None:
        """A known category; the decay edit's ranges."""
        check_ranges(self)
        _check_category("noise", self.category)


@dataclass(frozen=True)
class DecayConfig:
    """Decay ablation (Fig 5): SNKU on one category at fixed k and sigma, alpha swept."""

    category: str
    k: Count
    sigma: NonNegative  # the decay edit's sigma
    alphas: tuple[PositiveFraction, ...]

    def __post_init__(self) -> None:
        """A known category; the decay edit's ranges."""
        check_ranges(self)
        _check_category("decay", self.category)


@dataclass(frozen=True)
class SeesawConfig:
    """Privacy seesaw: forget this seeded fraction of each category's memorized secrets."""

    forget_fraction: OpenFraction = 0.5  # both halves must be non-empty
    seed: Natural = 0

    def __post_init__(self) -> None:
        """A fraction strictly between 0 and 1."""
        check_ranges(self)


@dataclass(frozen=True)
class ExperimentsConfig:
    """The `experiments` section: the paper's experiments, run in memory on the cached statistics."""

    seeds: tuple[Natural, ...]
    budget: BudgetConfig
    noise: NoiseConfig
    decay: DecayConfig
    scoring: tuple[str, ...] = SCORINGS
    seesaw: SeesawConfig = SeesawConfig()

    def __post_init__(self) -> None:
        """At least one seed; known cluster scorings."""
        check_ranges(self)
        if not self.seeds:
            raise ValueError("seeds = [] must name at least one seed")
        bad = [r for r in self.scoring if r not in SCORINGS]
        if bad:
            raise ValueError(f"scoring contains {bad}; allowed: {', '.join(SCORINGS)}")


@dataclass(frozen=True)
class Plan:
    """What the experiments stage runs: the top-level seed, the pipeline and the experiments sections."""

    seed: int
    pipeline: PipelineConfig
    experiments: ExperimentsConfig


@dataclass(frozen=True)
class Spec:
    """One run: method x category x seed with config overrides (sorted key/value pairs)."""

    experiment: str
    method: str
    category: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()
    forget_fraction: float | None = None

    @property
    def label(self) -> str:
        """A short readable run name (no private text)."""
        extra = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.experiment}-{self.method}-{self.category}-s{self.seed}" + (f"-{extra}" if extra else "")


def _seeds(p: Plan) -> list[Spec]:
    """Every pipeline method on every category, once per seed."""
    return [Spec("seeds", m, c, s) for m in p.pipeline.methods for c in p.pipeline.categories
            for s in p.experiments.seeds]


def _budget(p: Plan) -> list[Spec]:
    """The K sweep of the budget methods on every category."""
    return [Spec("budget", m, c, p.seed, (("k", k),)) for m in p.experiments.budget.methods
            for c in p.pipeline.categories for k in p.experiments.budget.ks]


def _ablations(p: Plan) -> list[Spec]:
    """SNKU's noise (sigma) and decay (alpha) sweeps at a fixed K."""
    noise, decay = p.experiments.noise, p.experiments.decay
    out = [Spec("noise", "snku", noise.category, p.seed, (("alpha", noise.alpha), ("k", noise.k), ("sigma", s)))
           for s in noise.sigmas]
    out += [Spec("decay", "snku", decay.category, p.seed, (("alpha", a), ("k", decay.k), ("sigma", decay.sigma)))
            for a in decay.alphas]
    return out


def _scoring(p: Plan) -> list[Spec]:
    """SNKU with each cluster-scoring rule on every category."""
    return [Spec("scoring", "snku", c, p.seed, (("rank_by", r),)) for c in p.pipeline.categories
            for r in p.experiments.scoring]


def _seesaw(p: Plan) -> list[Spec]:
    """Every pipeline method forgetting a fraction of each category's memorized secrets."""
    frac = p.experiments.seesaw.forget_fraction
    return [Spec("seesaw", m, c, p.seed, (), frac) for m in p.pipeline.methods for c in p.pipeline.categories]


def experiment_specs(p: Plan) -> list[Spec]:
    """All runs, in a fixed order; duplicates across experiments are kept (the cache dedups them)."""
    return _seeds(p) + _budget(p) + _ablations(p) + _scoring(p) + _seesaw(p)


def forget_split(records: Sequence[SecretRecord], fraction: float, seed: int) -> tuple[list[SecretRecord], list[SecretRecord]]:
    """Seeded (forget, keep) split of `records`, both non-empty, each in the input order."""
    if len(records) < 2:
        raise ValueError(f"seesaw needs >= 2 memorized secrets to split, got {len(records)}")
    n_forget = min(len(records) - 1, max(1, round(fraction * len(records))))
    chosen = set(random.Random(seed).sample([r.id for r in records], n_forget))
    return [r for r in records if r.id in chosen], [r for r in records if r.id not in chosen]


def config_fields(cfg: Any) -> dict[str, Any]:
    """The swept knobs of a method config (k, sigma, alpha, rank_by), None where it has none."""
    return {name: getattr(cfg, name, None) for name in ("k", "sigma", "alpha", "rank_by")}
