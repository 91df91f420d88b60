"""Methods compared at equal forgetting: a seeded search over each method's strength for the least utility loss
that reaches one forget target.

Each method's default strength forgets as much as it happens to, so a table of defaults compares unequal things.
Here every method gets the same target, the forget gap (the distance of the privacy score to the retrained
model's, lib.core.metrics.forget_gap) at most `target` times the fine-tuned model's gap, and a budget of
`n_trials` edits; Optuna's TPE sampler (seeded, so the same params give the same trials) proposes values of
the method's strength fields (a space per method in params: each field's range, on a log scale or not; integer
when the method's Config field is), minimising the validation perplexity with the target as a constraint. The
calibrated point is the feasible trial with the lowest perplexity; when no trial reaches the target, the trial
closest to it is reported as not reached.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lib.core.params import Count, Natural, PositiveFraction, check_ranges


@dataclass(frozen=True)
class Range:
    """One strength field's search range."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        """low < high, both > 0 on a log scale."""
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"range [{self.low}, {self.high}] invalid; allowed: low < high (and low > 0 with log)")


@dataclass(frozen=True)
class CalibrationConfig:
    """The `calibration` section: target, budget, seed and each method's search space."""

    target: PositiveFraction = 0.1  # reached: forget gap <= target x the fine-tuned model's gap
    n_trials: Count = 8
    seed: Natural = 0
    methods: tuple[str, ...] = ()
    spaces: dict[str, dict[str, Range]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every field within its range; a space for every calibrated method."""
        check_ranges(self)
        missing = [m for m in self.methods if not self.spaces.get(m)]
        if missing:
            raise ValueError(f"calibration.spaces has no space for {missing[0]!r}; allowed: one per calibrated method")


@dataclass(frozen=True)
class Trial:
    """One edit of the search: the values tried, its utility and forget gap (None: the method refused them)."""

    number: int
    values: dict[str, Any]
    valid_ppl: float | None = None
    gap_ratio: float | None = None
    refused: str | None = None

    def reached(self, target: float) -> bool:
        """True when the trial's forget gap is within the target."""
        return self.gap_ratio is not None and self.gap_ratio <= target


def is_integer(config: type, name: str) -> bool:
    """True when field `name` of a method's Config holds an integer (searched as one)."""
    hint = typing.get_type_hints(config)[name]
    return isinstance(hint, type) and issubclass(hint, int) and not issubclass(hint, bool)


def check_space(config: type, space: Mapping[str, Range], where: str) -> None:
    """Every searched field is a numeric field of the method's Config."""
    names = {f.name for f in dataclasses.fields(config)}
    for name in space:
        hints = typing.get_type_hints(config)
        kind = hints.get(name)
        if name not in names or not (isinstance(kind, type) and issubclass(kind, (int, float))):
            numeric = sorted(n for n in names if isinstance(hints[n], type) and issubclass(hints[n], (int, float)))
            raise ValueError(f"{where}.{name} is no numeric field of the method; allowed: {', '.join(numeric)}")


def search(config: type, space: Mapping[str, Range], evaluate: Callable[[dict[str, Any]], tuple[float, float]],
           cfg: CalibrationConfig) -> list[Trial]:
    """Run the seeded TPE search: `evaluate(values)` gives (validation PPL, gap ratio) or raises ValueError when
    the method refuses the values (that trial is recorded and pruned)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials are returned and reported, not logged
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(4, cfg.n_trials))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> float:
        """One edit; the constraint is the gap ratio minus the target (feasible when <= 0)."""
        values = {name: (trial.suggest_int(name, math.ceil(r.low), math.floor(r.high), log=r.log)
                         if is_integer(config, name) else trial.suggest_float(name, r.low, r.high, log=r.log))
                  for name, r in space.items()}
        try:
            ppl, ratio = evaluate(values)
        except ValueError as err:
            trials.append(Trial(trial.number, values, refused=str(err)))
            trial.set_constraint("gap", math.inf)
            raise optuna.TrialPruned() from None
        trials.append(Trial(trial.number, values, ppl, ratio))
        trial.set_constraint("gap", ratio - cfg.target)
        return ppl

    study.optimize(objective, n_trials=cfg.n_trials)
    return trials


def calibrated(trials: list[Trial], target: float) -> tuple[Trial | None, bool]:
    """(the reached trial with the lowest PPL, True), or (the trial nearest the target, False); None: all refused."""
    scored = [t for t in trials if t.gap_ratio is not None]
    feasible = [t for t in scored if t.reached(target)]
    if feasible:
        return min(feasible, key=lambda t: (t.valid_ppl, t.number)), True
    return (min(scored, key=lambda t: (t.gap_ratio, t.number)) if scored else None), False


def frontier(trials: list[Trial]) -> list[Trial]:
    """The privacy-utility frontier: trials no other trial beats on both gap ratio and PPL, by gap ratio."""
    scored = sorted((t for t in trials if t.gap_ratio is not None), key=lambda t: (t.gap_ratio, t.valid_ppl))
    out: list[Trial] = []
    for t in scored:
        if not out or t.valid_ppl < out[-1].valid_ppl:
            out.append(t)
    return out


def study_record(result: dict[str, Any]) -> tuple[dict[str, float], list[tuple[str, dict[str, Any], dict[str, float]]]]:
    """A search result's tracking record: the calibrated point's metrics, and (name, values, metrics) per trial."""
    best = result["best"] or {}
    metrics = {"reached": float(result["reached"]), "n_trials": float(len(result["trials"])),
               "valid_ppl_before": result["valid_ppl_before"], "gap_before": result["gap_before"],
               **{k: best[k] for k in ("valid_ppl", "gap_ratio") if best.get(k) is not None}}
    trials = [(f"trial-{t['number']}", t["values"], {k: t[k] for k in ("valid_ppl", "gap_ratio") if t[k] is not None})
              for t in result["trials"]]
    return metrics, trials
