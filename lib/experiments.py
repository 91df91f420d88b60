"""The SNKU paper's experiments as a flat list of runs (pure: params in, run specs out).

Each run is one method's edit of the fine-tuned model on one category with some config
overrides and a seed; `experiment` names the table or figure it belongs to:
seeds (Table 1, mean +- std), budget (Fig 2/3), noise (Fig 4), decay (Fig 5),
scoring (Appendix C, HYB/SUM/AVG) and seesaw (forget a subset, measure the rest).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from lib.data.records import SecretRecord
from lib.params import Params

EXPERIMENTS = ("seeds", "budget", "noise", "decay", "scoring", "seesaw")


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


def _seeds(p: Params) -> list[Spec]:
    """Every pipeline method on every category, once per seed."""
    return [Spec("seeds", m, c, s) for m in p.pipeline.methods for c in p.pipeline.categories
            for s in p.experiments.seeds]


def _budget(p: Params) -> list[Spec]:
    """The K sweep of the budget methods on every category."""
    return [Spec("budget", m, c, p.seed, (("k", k),)) for m in p.experiments.budget.methods
            for c in p.pipeline.categories for k in p.experiments.budget.ks]


def _ablations(p: Params) -> list[Spec]:
    """SNKU's noise (sigma) and decay (alpha) sweeps at a fixed K."""
    noise, decay = p.experiments.noise, p.experiments.decay
    out = [Spec("noise", "snku", noise.category, p.seed, (("alpha", noise.alpha), ("k", noise.k), ("sigma", s)))
           for s in noise.sigmas]
    out += [Spec("decay", "snku", decay.category, p.seed, (("alpha", a), ("k", decay.k), ("sigma", decay.sigma)))
            for a in decay.alphas]
    return out


def _scoring(p: Params) -> list[Spec]:
    """SNKU with each cluster-scoring rule on every category."""
    return [Spec("scoring", "snku", c, p.seed, (("rank_by", r),)) for c in p.pipeline.categories
            for r in p.experiments.scoring]


def _seesaw(p: Params) -> list[Spec]:
    """Every pipeline method forgetting a fraction of each category's memorized secrets."""
    frac = p.experiments.seesaw.forget_fraction
    return [Spec("seesaw", m, c, p.seed, (), frac) for m in p.pipeline.methods for c in p.pipeline.categories]


def experiment_specs(p: Params) -> list[Spec]:
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
