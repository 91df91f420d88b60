"""params.yaml section `benchmarks`: the real file builds, run names, cross-field checks, key errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lib.bench.suites
import lib.bench.tofu
import lib.core.params
from lib.core.finetune import CausalTrainConfig
from lib.methods import CAUSAL_METHODS
from lib.core.params import (BenchmarksParams, BenchRunParams, LumeParams, ParamsError, TofuParams, load_params,
                        run_suite)
from tests.test_causal_params import causal_error, write as causal_write

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("tofu_forget01", "tofu_forget05", "tofu_forget10", "lume")


@pytest.fixture(scope="module")
def bench() -> BenchmarksParams:
    """The project's benchmarks section."""
    return load_params(ROOT / "params.yaml").benchmarks


def write(tmp_path: Path, mutate) -> Path:
    """A copy of the project's params.yaml (anchors resolved) with its `benchmarks` section changed by `mutate`."""
    return causal_write(tmp_path, lambda params: mutate(params["benchmarks"]))


def error(tmp_path: Path, mutate) -> str:
    """The one-line ParamsError message of the mutated params."""
    return causal_error(tmp_path, lambda params: mutate(params["benchmarks"]))


# ---------------------------------------------------------------- the real file

def test_benchmarks_section_builds(bench: BenchmarksParams) -> None:
    assert isinstance(bench.tofu, TofuParams) and isinstance(bench.lume, LumeParams)
    assert isinstance(bench.tofu.finetune, CausalTrainConfig) and isinstance(bench.lume.finetune, CausalTrainConfig)
    assert set(bench.suites) <= set(lib.core.params.SUITES)
    assert bench.runs and all(isinstance(r, BenchRunParams) for r in bench.runs.values())
    for run, cfg in bench.runs.items():
        assert run_suite(run)[0] == cfg.suite and cfg.suite in bench.suites
    assert set(bench.pipeline) <= set(CAUSAL_METHODS)
    assert 0.0 < bench.lume.holdout_fraction < 1.0 and isinstance(bench.lume.holdout_fraction, float)
    assert bench.tofu.max_new < bench.tofu.max_len and bench.lume.max_new < bench.lume.max_len
    assert isinstance(bench.tofu.finetune.learning_rate, float)


def test_methods_merge_causal_methods_with_their_own_overrides(bench: BenchmarksParams) -> None:
    causal = load_params(ROOT / "params.yaml").causal.methods
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    overridden = {k for k, v in raw["benchmarks"]["methods"].items() if v != raw["causal"]["methods"][k]}
    assert "ig" in overridden and "ta" not in overridden and "di" not in overridden
    for name in CAUSAL_METHODS:
        ours, theirs = getattr(bench.methods, name), getattr(causal, name)
        assert type(ours) is type(theirs) is CAUSAL_METHODS[name].Config
        if name not in overridden:
            assert ours == theirs, name  # merged through the YAML anchor
    assert bench.methods.ig != causal.ig
    assert bench.methods.ig.steps == raw["benchmarks"]["methods"]["ig"]["steps"]
    assert bench.methods.ig.max_targets == raw["benchmarks"]["methods"]["ig"]["max_targets"]
    assert causal.ig.steps == raw["causal"]["methods"]["ig"]["steps"]


def test_suite_and_split_names_match_the_scorers() -> None:
    assert lib.core.params.SUITES == lib.bench.suites.SUITES
    assert lib.core.params.TOFU_SPLITS == lib.bench.tofu.FORGET_SPLITS


# ---------------------------------------------------------------- run_suite

def test_run_suite_on_allowed_names() -> None:
    assert [run_suite(r) for r in RUNS] == [("tofu", "forget01"), ("tofu", "forget05"), ("tofu", "forget10"),
                                            ("lume", None)]
    assert all(f"tofu_{s}" in RUNS for s in lib.core.params.TOFU_SPLITS)


@pytest.mark.parametrize("bad", ["tofu", "tofu_", "tofu_forget02", "tofu_retain90", "TOFU_forget01",
                                 "lume_forget01", "tofu_forget01_x", "", "squad"])
def test_run_suite_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ParamsError) as err:
        run_suite(bad)
    msg = str(err.value)
    assert repr(bad) in msg and all(name in msg for name in RUNS)


# ---------------------------------------------------------------- cross-field checks

def test_run_whose_suite_is_not_fine_tuned(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b.update(suites=["tofu"]))
    assert "benchmarks.runs.lume.suite" in msg and "['tofu']" in msg


def test_run_with_the_wrong_suite(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["runs"].update(tofu_forget01={"suite": "lume"}))
    assert "benchmarks.runs.tofu_forget01.suite = 'lume'" in msg and "'tofu'" in msg


def test_unknown_run_name(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["runs"].update(tofu_forget02={"suite": "tofu"}))
    assert "'tofu_forget02'" in msg and "tofu_forget05" in msg


def test_unknown_suite(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b.update(suites=["tofu", "lume", "squad"]))
    assert "benchmarks.suites contains 'squad'" in msg and "'lume'" in msg


def test_unknown_pipeline_method(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b.update(pipeline=["ga", "magic"]))
    assert "benchmarks.pipeline contains 'magic'" in msg
    assert all(repr(name) in msg for name in CAUSAL_METHODS)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_holdout_fraction(tmp_path: Path, fraction: float) -> None:
    msg = error(tmp_path, lambda b: b["lume"].update(holdout_fraction=fraction))
    assert f"benchmarks.lume.holdout_fraction = {fraction}" in msg and "(0, 1)" in msg


@pytest.mark.parametrize("where", ["batch_size", "tofu.max_len", "lume.max_new"])
def test_non_positive_sizes(tmp_path: Path, where: str) -> None:
    def mutate(b: dict) -> None:
        *parents, key = where.split(".")
        node = b
        for part in parents:
            node = node[part]
        node[key] = 0

    msg = error(tmp_path, mutate)
    assert f"benchmarks.{where} = 0" in msg and "positive" in msg


# ---------------------------------------------------------------- key and type errors

def test_missing_keys(tmp_path: Path) -> None:
    assert "missing key params.benchmarks.lume.seed" in error(tmp_path, lambda b: b["lume"].pop("seed"))
    assert "missing key params.benchmarks.pipeline" in error(tmp_path, lambda b: b.pop("pipeline"))
    msg = error(tmp_path, lambda b: b["tofu"]["finetune"].pop("epochs"))
    assert "missing key params.benchmarks.tofu.finetune.epochs" in msg


def test_unknown_keys(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["tofu"].update(max_lenght=64))
    assert "unknown key params.benchmarks.tofu.max_lenght" in msg and "max_len" in msg
    msg = error(tmp_path, lambda b: b["runs"]["lume"].update(split="x"))
    assert "unknown key params.benchmarks.runs.lume.split" in msg
    msg = error(tmp_path, lambda b: b["methods"]["ig"].update(stepz=3))
    assert "unknown key params.benchmarks.methods.ig.stepz" in msg


def test_wrong_types(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["lume"].update(max_len="long"))
    assert "params.benchmarks.lume.max_len = 'long'" in msg
    msg = error(tmp_path, lambda b: b.update(suites="tofu"))
    assert "params.benchmarks.suites = 'tofu' is not a list" in msg
    loaded = load_params(write(tmp_path, lambda b: b["tofu"].update(n_retain_authors=None)))
    assert loaded.benchmarks.tofu.n_retain_authors is None  # nullable counts accept null
