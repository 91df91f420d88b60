"""The benchmark suites (TOFU, LUME) behind one interface, and the `benchmarks` params section.

A suite is a module `lib/bench/<name>.py` with
- `Config`: the schema of `benchmarks.<name>` (subset sizes, token budgets, the fine-tuning recipe);
- `build_files(cfg, data_root, runs)`: what the bench_data stage writes for the suite and each of its runs;
- `sets_from_json(raw)`, `evaluate(model, tokenizer, sets, cfg, batch_size)`: its scores of one model;
- `with_reference(scores, reference)`: scores completed against the run's reference model (TOFU's forget
  quality), `flat(scores)`: the scalars MLflow and the report show;
- optionally `attack_pairs(sets)`: the AttackPairs the attack stages read (a suite without it is not attacked), and
  `check_attackable(cfg)`: a ValueError when its Config leaves no never-trained rows.
A run is one scored forget set: `tofu_forget01` / `_05` / `_10` (TOFU's forget split) or `lume`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from lib.core.params import Count, NonEmpty, check_ranges

SUITES = ("tofu", "lume")
TOFU_SPLITS = ("forget01", "forget05", "forget10")


def check_suite(name: str) -> str:
    """A known suite name, else ValueError naming the allowed ones."""
    if name not in SUITES:
        raise ValueError(f"benchmark suite {name!r} unknown; allowed: {', '.join(SUITES)}")
    return name


def suite(name: str) -> ModuleType:
    """The suite module called `name` (imported on first use)."""
    return importlib.import_module(f"lib.bench.{check_suite(name)}")


def run_suite(run: str) -> tuple[str, str | None]:
    """(suite, forget split) of a run name: 'tofu_forget05' -> ('tofu', 'forget05'), 'lume' -> ('lume', None)."""
    if run == "lume":
        return "lume", None
    name, _, split = run.partition("_")
    if name != "tofu" or split not in TOFU_SPLITS:
        raise ValueError(f"benchmark run {run!r} unknown; allowed: {', '.join(f'tofu_{s}' for s in TOFU_SPLITS)}, "
                         "lume")
    return name, split


@dataclass(frozen=True)
class AttackPairs:
    """What the attacks read on one run, as (prompt, answer) pairs: D_f, pairs of the same kind the model never
    trained on (membership non-members; the unrelated-text relearning attacker's data), and D_f's facts asked
    another way (the paraphrase attack; None when the suite has none)."""

    forget: tuple[tuple[str, str], ...]
    held_out: tuple[tuple[str, str], ...]
    paraphrased: tuple[tuple[str, str], ...] | None = None


def attackable(run: str) -> ModuleType:
    """The suite module of a run the attacks can read; ValueError naming the suites they can when they cannot."""
    module = suite(run_suite(run)[0])
    if not hasattr(module, "attack_pairs"):
        able = [name for name in SUITES if hasattr(suite(name), "attack_pairs")]
        raise ValueError(f"benchmark run {run!r} cannot be attacked: its suite holds no never-trained rows of D_f's "
                         f"kind (membership non-members); allowed: runs of the suites {', '.join(able)}")
    return module


def attack_ready(run: str, suite_cfg: Any) -> None:
    """ValueError when the run's suite, as configured (`suite_cfg`: its Config), leaves no never-trained rows for
    the attacks (a suite's optional `check_attackable`)."""
    check = getattr(attackable(run), "check_attackable", None)
    if check is not None:
        check(suite_cfg)


def attack_pairs(run: str, sets: Any) -> AttackPairs:
    """The run's AttackPairs from its evaluation sets."""
    return attackable(run).attack_pairs(sets)


@dataclass(frozen=True)
class RunConfig:
    """One scored run: the suite whose fine-tuned model it unlearns from."""

    suite: str


@dataclass(frozen=True)
class BenchConfig:
    """The `benchmarks` section; `tofu`, `lume`, `neighbours`, `neurons`, `calibration` and `methods` are validated
    by their own schemas."""

    data_root: NonEmpty | None  # folder with tofu/ and lume/ copies of the hub datasets; null: the hub
    suites: tuple[str, ...]  # suites whose model is fine-tuned
    runs: dict[str, RunConfig]  # run name -> its suite
    pipeline: tuple[str, ...]  # methods scored on every run
    batch_size: Count
    tofu: dict[str, Any]
    lume: dict[str, Any]
    neighbours: dict[str, Any]
    methods: dict[str, Any]
    neurons: dict[str, Any] = field(default_factory=dict)  # lib.core.statistics.NeuronsConfig (its defaults)
    calibration: dict[str, Any] = field(default_factory=dict)  # lib.core.calibration.CalibrationConfig
    # runs whose models the attacks read too (bench_attack stages, `make run-attacks`); () = none. Not in the
    # `attacks` section: the causal and masked attack stages read that whole, and would rerun when it changed
    attack_runs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Known suites and runs, each run's suite fine-tuned, attacked runs among them and attackable; a positive
        batch size."""
        check_ranges(self)
        for name in self.suites:
            if name not in SUITES:
                raise ValueError(f"suites contains {name!r}; allowed: {list(SUITES)}")
        for run, cfg in self.runs.items():
            try:
                name = run_suite(run)[0]
            except ValueError as err:
                raise ValueError(f"runs: {err}") from None
            if cfg.suite != name or name not in self.suites:
                raise ValueError(f"runs.{run}.suite = {cfg.suite!r}; allowed: {name!r}, which suites = "
                                 f"{list(self.suites)} must list")
        for run in self.attack_runs:
            if run not in self.runs:
                raise ValueError(f"attack_runs contains {run!r}, which runs does not list; allowed: "
                                 f"{', '.join(self.runs)}")
            try:
                attackable(run)
            except ValueError as err:
                raise ValueError(f"attack_runs contains {run!r}: {err}") from None
