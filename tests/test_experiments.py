"""Experiment specs (the paper's tables and figures as runs) and the seesaw split."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lib.core.params import load_params
from lib.data.records import PipelineConfig, SecretRecord
from lib.methods import snku
from lib.reports.experiments import EXPERIMENTS, ExperimentsConfig, Plan, config_fields, experiment_specs, forget_split

ROOT = Path(__file__).resolve().parents[1]


def test_specs_cover_every_experiment_of_the_default_params() -> None:
    params = load_params(ROOT / "params.yaml")
    p = Plan(params.get("seed", int), params.get("pipeline", PipelineConfig),
             params.get("experiments", ExperimentsConfig))
    specs = experiment_specs(p)
    by = {e: [s for s in specs if s.experiment == e] for e in EXPERIMENTS}
    n_methods, n_cats = len(p.pipeline.methods), len(p.pipeline.categories)
    assert len(by["seeds"]) == n_methods * n_cats * len(p.experiments.seeds)
    assert len(by["budget"]) == len(p.experiments.budget.methods) * n_cats * len(p.experiments.budget.ks)
    assert tuple(dict(s.overrides)["sigma"] for s in by["noise"]) == p.experiments.noise.sigmas
    assert {dict(s.overrides)["alpha"] for s in by["noise"]} == {p.experiments.noise.alpha}
    assert tuple(dict(s.overrides)["alpha"] for s in by["decay"]) == p.experiments.decay.alphas
    assert all(s.method == "snku" and s.category == "TEL" for s in by["noise"] + by["decay"])
    assert len(by["scoring"]) == n_cats * len(p.experiments.scoring)
    assert all(s.forget_fraction == p.experiments.seesaw.forget_fraction for s in by["seesaw"])
    assert len({s.label for s in specs}) == len(specs)  # labels name runs unambiguously


def _records(n: int) -> list[SecretRecord]:
    """n placeholder secret records."""
    return [SecretRecord(f"TEL-{i:04d}", "TEL", "call ", str(i), " .", 2, False) for i in range(n)]


def test_forget_split_is_seeded_disjoint_and_ordered() -> None:
    records = _records(9)
    forget, keep = forget_split(records, 0.5, seed=1)
    assert len(forget) == 4 and len(keep) == 5 and not {r.id for r in forget} & {r.id for r in keep}
    assert forget == [r for r in records if r in forget]  # input order kept
    assert forget_split(records, 0.5, seed=1) == (forget, keep)
    assert len({tuple(r.id for r in forget_split(records, 0.5, seed=s)[0]) for s in range(6)}) > 1
    assert len(forget_split(records, 0.99, seed=0)[1]) == 1  # never forgets everything
    with pytest.raises(ValueError, match="needs >= 2"):
        forget_split(records[:1], 0.5, seed=0)


def test_config_fields_reads_only_present_knobs() -> None:
    assert config_fields(snku.Config(k=7, rank_by="sum")) == {"k": 7, "sigma": 0.05, "alpha": 0.99, "rank_by": "sum"}

    @dataclasses.dataclass(frozen=True)
    class Bare:
        k: int = 3

    assert config_fields(Bare()) == {"k": 3, "sigma": None, "alpha": None, "rank_by": None}
