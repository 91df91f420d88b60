"""params.yaml section `benchmarks`: the real file builds, run names, cross-field checks, key errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lib.bench.lume
import lib.bench.tofu
from flows.check import check_params
from lib.bench.suites import SUITES, TOFU_SPLITS, BenchConfig, RunConfig, check_suite, run_suite, suite
from lib.core.finetune import TrainConfig
from lib.core.params import Params, load_params
from lib.data.neighbours import NeighbourConfig
from lib.methods import get, make_config
from tests.test_causal_params import causal_error
from tests.test_causal_params import write as causal_write

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("tofu_forget01", "tofu_forget05", "tofu_forget10", "lume")
RAW = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
BENCH_METHODS = tuple(RAW["benchmarks"]["methods"])  # the benchmark track's method sections


@pytest.fixture(scope="module")
def params() -> Params:
    """The project's params, checked whole."""
    return check_params(str(ROOT / "params.yaml"))


@pytest.fixture(scope="module")
def bench(params: Params) -> BenchConfig:
    """The project's benchmarks section."""
    return params.get("benchmarks", BenchConfig)


def write(tmp_path: Path, mutate) -> Path:
    """A copy of the project's params.yaml (anchors resolved) with its `benchmarks` section changed by `mutate`."""
    return causal_write(tmp_path, lambda p: mutate(p["benchmarks"]))


def error(tmp_path: Path, mutate) -> str:
    """The one-line ParamsError message of the mutated params."""
    return causal_error(tmp_path, lambda p: mutate(p["benchmarks"]))


# ---------------------------------------------------------------- the real file

def test_benchmarks_section_builds(params: Params, bench: BenchConfig) -> None:
    tofu = params.get("benchmarks.tofu", suite("tofu").Config)
    lume = params.get("benchmarks.lume", suite("lume").Config)
    assert isinstance(tofu, lib.bench.tofu.Config) and isinstance(lume, lib.bench.lume.Config)
    assert isinstance(tofu.finetune, TrainConfig) and isinstance(lume.finetune, TrainConfig)
    assert set(bench.suites) <= set(SUITES)
    assert bench.runs and all(isinstance(r, RunConfig) for r in bench.runs.values())
    for run, cfg in bench.runs.items():
        assert run_suite(run)[0] == cfg.suite and cfg.suite in bench.suites
    assert set(bench.pipeline) <= set(BENCH_METHODS)
    assert all("causal" in get(name).families for name in bench.pipeline)
    assert 0.0 < lume.holdout_fraction < 1.0 and isinstance(lume.holdout_fraction, float)
    assert tofu.max_new < tofu.max_len and lume.max_new < lume.max_len
    assert isinstance(tofu.finetune.learning_rate, float)
    assert isinstance(params.get("benchmarks.neighbours", NeighbourConfig), NeighbourConfig)
    assert bench.data_root == RAW["benchmarks"]["data_root"]


def test_methods_merge_causal_methods_with_their_own_overrides(params: Params) -> None:
    raw = RAW
    overridden = {k for k, v in raw["benchmarks"]["methods"].items() if v != raw["causal"]["methods"][k]}
    assert "ig" in overridden and "di" in overridden and "ta" not in overridden and "npo" in overridden
    assert set(BENCH_METHODS) == set(raw["causal"]["methods"])  # merged through the YAML anchor

    def config(track: str, name: str):
        return make_config(name, params.get(f"{track}.{name}"), where=f"{track}.{name}")

    for name in BENCH_METHODS:
        ours, theirs = config("benchmarks.methods", name), config("causal.methods", name)
        assert type(ours) is type(theirs) is get(name).Config
        if name not in overridden:
            assert ours == theirs, name
    ig_bench, ig_causal = config("benchmarks.methods", "ig"), config("causal.methods", "ig")
    assert ig_bench != ig_causal
    assert ig_bench.steps == raw["benchmarks"]["methods"]["ig"]["steps"]
    assert ig_bench.max_targets == raw["benchmarks"]["methods"]["ig"]["max_targets"]
    assert ig_causal.steps == raw["causal"]["methods"]["ig"]["steps"]


def test_suite_and_split_names_match_the_scorers() -> None:
    assert TOFU_SPLITS == lib.bench.tofu.FORGET_SPLITS
    for name in SUITES:
        module = suite(name)
        assert module.__name__ == f"lib.bench.{name}" and check_suite(name) == name
        for attr in ("Config", "build_files", "sets_from_json", "evaluate", "with_reference", "flat", "sizes"):
            assert callable(getattr(module, attr)), (name, attr)
    with pytest.raises(ValueError, match=r"'squad'.*tofu, lume"):
        suite("squad")


# ---------------------------------------------------------------- run_suite

def test_run_suite_on_allowed_names() -> None:
    assert [run_suite(r) for r in RUNS] == [("tofu", "forget01"), ("tofu", "forget05"), ("tofu", "forget10"),
                                            ("lume", None)]
    assert all(f"tofu_{s}" in RUNS for s in TOFU_SPLITS)


@pytest.mark.parametrize("bad", ["tofu", "tofu_", "tofu_forget02", "tofu_retain90", "TOFU_forget01",
                                 "lume_forget01", "tofu_forget01_x", "", "squad"])
def test_run_suite_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        run_suite(bad)
    msg = str(err.value)
    assert repr(bad) in msg and all(name in msg for name in RUNS)


# ---------------------------------------------------------------- cross-field checks

def test_run_whose_suite_is_not_fine_tuned(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b.update(suites=["tofu"]))
    assert "benchmarks" in msg and "runs.lume.suite" in msg and "['tofu']" in msg


def test_run_with_the_wrong_suite(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["runs"].update(tofu_forget01={"suite": "lume"}))
    assert "benchmarks" in msg and "runs.tofu_forget01.suite = 'lume'" in msg and "'tofu'" in msg


def test_unknown_run_name(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["runs"].update(tofu_forget02={"suite": "tofu"}))
    assert "benchmarks: runs" in msg and "'tofu_forget02'" in msg and "tofu_forget05" in msg


def test_unknown_suite(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b.update(suites=["tofu", "lume", "squad"]))
    assert "benchmarks" in msg and "suites contains 'squad'" in msg and "'lume'" in msg


def test_unknown_pipeline_method(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b.update(pipeline=["ga", "magic"]))
    assert "benchmarks.pipeline contains 'magic'" in msg
    assert all(repr(name) in msg for name in BENCH_METHODS)


def test_pipeline_method_without_a_section(tmp_path: Path) -> None:
    def mutate(b: dict) -> None:
        del b["methods"]["ta"]

    msg = error(tmp_path, lambda b: (mutate(b), b.update(pipeline=["ga", "ta"])))
    assert "benchmarks.pipeline contains 'ta'" in msg and "benchmarks.methods" in msg


def test_unknown_method_section(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["methods"].update(magic={"steps": 1}))
    assert "unknown key benchmarks.methods.magic" in msg


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_holdout_fraction(tmp_path: Path, fraction: float) -> None:
    msg = error(tmp_path, lambda b: b["lume"].update(holdout_fraction=fraction))
    assert f"benchmarks.lume.holdout_fraction = {fraction}" in msg and "(0, 1)" in msg


@pytest.mark.parametrize("where, fragments", [
    ("batch_size", ["benchmarks.batch_size = 0", "an integer >= 1"]),
    ("tofu.max_len", ["benchmarks.tofu.max_len = 0", "an integer >= 1"]),
    ("lume.max_new", ["benchmarks.lume.max_new = 0", "an integer >= 1"]),
    ("tofu.finetune.batch_size", ["benchmarks.tofu.finetune.batch_size = 0", "an integer >= 1"]),
])
def test_non_positive_sizes(tmp_path: Path, where: str, fragments: list[str]) -> None:
    def mutate(b: dict) -> None:
        *parents, key = where.split(".")
        node = b
        for part in parents:
            node = node[part]
        node[key] = 0

    msg = error(tmp_path, mutate)
    assert all(f in msg for f in fragments), msg


# ---------------------------------------------------------------- key and type errors

def test_missing_keys(tmp_path: Path) -> None:
    """Keys without a default are required; a suite key left out takes the suite Config's default."""
    assert "missing key benchmarks.pipeline" in error(tmp_path, lambda b: b.pop("pipeline"))
    assert "missing key benchmarks.runs" in error(tmp_path, lambda b: b.pop("runs"))
    assert "missing key benchmarks.lume" in error(tmp_path, lambda b: b.pop("lume"))

    def drop(b: dict) -> None:
        b["lume"].pop("seed")
        b["tofu"]["finetune"].pop("epochs")

    params = check_params(str(write(tmp_path, drop)))
    assert params.get("benchmarks.lume", lib.bench.lume.Config).seed == lib.bench.lume.Config().seed
    assert params.get("benchmarks.tofu", lib.bench.tofu.Config).finetune.epochs == TrainConfig().epochs


def test_unknown_keys(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["tofu"].update(max_lenght=64))
    assert "unknown key benchmarks.tofu.max_lenght" in msg and "max_len" in msg
    msg = error(tmp_path, lambda b: b["runs"]["lume"].update(split="x"))
    assert "unknown key benchmarks.runs.lume.split" in msg
    msg = error(tmp_path, lambda b: b["methods"]["ig"].update(stepz=3))
    assert "unknown key benchmarks.methods.ig.stepz" in msg
    msg = error(tmp_path, lambda b: b.update(batchsize=3))
    assert "unknown key benchmarks.batchsize" in msg and "batch_size" in msg


def test_wrong_types(tmp_path: Path) -> None:
    msg = error(tmp_path, lambda b: b["lume"].update(max_len="long"))
    assert "benchmarks.lume.max_len = 'long'" in msg
    msg = error(tmp_path, lambda b: b.update(suites="tofu"))
    assert "benchmarks.suites = 'tofu' is not a list" in msg
    loaded = check_params(str(write(tmp_path, lambda b: b["tofu"].update(n_retain_authors=None))))
    assert loaded.get("benchmarks.tofu", lib.bench.tofu.Config).n_retain_authors is None  # nullable counts


def test_loaded_section_raw_is_plain_data() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.get("benchmarks.runs") == RAW["benchmarks"]["runs"]
    assert params.get("benchmarks", BenchConfig).tofu == RAW["benchmarks"]["tofu"]  # sub-sections stay raw
