"""params.yaml validation: unknown, missing and malformed values are one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lib.core.params import ParamsError, load_params, section
from lib.core.presets import merge

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, mutate) -> Path:
    """A copy of the project's params.yaml changed by `mutate`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_project_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.methods.snku.edit["TEL"].alpha == pytest.approx(0.9997)
    assert isinstance(params.finetune.learning_rate, float)
    assert section(params, "methods.snku")["k"] == params.methods.snku.k


@pytest.mark.parametrize("mutate, fragment", [
    (lambda p: p["finetune"].update(learnin_rate=1), "unknown key params.finetune.learnin_rate"),
    (lambda p: p["finetune"].pop("epochs"), "missing key params.finetune.epochs"),
    (lambda p: p["finetune"].update(learning_rate="abc"), "params.finetune.learning_rate = 'abc' is not a number"),
    (lambda p: p["finetune"].update(epochs=2.5), "params.finetune.epochs = 2.5"),
    (lambda p: p["memorized"]["thresholds"].update(TEL="high"), "memorized.thresholds.TEL = 'high'"),
    (lambda p: p["pipeline"].update(methods=["snku", "magic"]), "'magic'; registered methods"),
    (lambda p: p["pipeline"].update(categories=["SSN"]), "'SSN'"),
    (lambda p: p["methods"]["snku"].update(k=0), "methods.snku.k = 0"),
    (lambda p: p["methods"]["snku"]["edit"].pop("NAME"), "methods.snku.edit has keys"),
    (lambda p: p["data"].update(source="web"), "data.source = 'web'"),
])
def test_bad_params_name_the_key(tmp_path: Path, mutate, fragment: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, mutate))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_numbers_written_as_strings_are_parsed(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, lambda p: p["finetune"].update(learning_rate="3e-4")))
    assert params.finetune.learning_rate == pytest.approx(3e-4)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_preset_merge_overrides_nested_keys_only() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    with pytest.raises(ValueError, match="preset key a.z does not exist"):
        merge(base, {"a": {"z": 1}})


def test_merge_replaces_benchmark_runs_whole() -> None:
    """benchmarks.runs is a mapping of user-chosen names: a preset replaces it, new names allowed."""
    base = {"benchmarks": {"runs": {"tofu_forget01": {"suite": "tofu"}}, "batch_size": 16}}
    runs = {"tofu_forget05": {"suite": "tofu"}, "lume": {"suite": "lume"}}
    assert merge(base, {"benchmarks": {"runs": runs}}) == {"benchmarks": {"runs": runs, "batch_size": 16}}


def test_full_preset_is_valid(tmp_path: Path) -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = merge(base, yaml.safe_load((ROOT / "presets" / "full.yaml").read_text()))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merged))
    params = load_params(path)
    assert params.finetune.model == "bert-base-uncased"
    assert set(params.benchmarks.runs) == {"tofu_forget01", "tofu_forget05", "tofu_forget10", "lume"}
    assert params.benchmarks.methods.simu.max_targets is None and params.benchmarks.tofu.n_retain_authors is None


def test_bert_large_preset_on_top_of_full_is_valid(tmp_path: Path) -> None:
    """Table 2's preset: full, then bert_large; every method keeps one neuron budget."""
    merged = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in ("full", "bert_large"):
        merged = merge(merged, yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text()))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merged))
    params = load_params(path)
    assert params.finetune.model == "bert-large-uncased"
    assert {params.methods.gare.k, params.methods.depn.k, params.methods.apneap.k, params.methods.snku.k} == {300}


def test_bad_method_config_and_experiment_values_are_errors(tmp_path: Path) -> None:
    """Values a method or sweep cannot use stop at load time, naming the value and what is allowed."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    cases = [({"methods": {"depn": {"aggregate": "mean"}}}, "aggregate='mean'"),
             ({"ig": {"grid": "trapezoid"}}, "trapezoid"),
             ({"experiments": {"budget": {"methods": ["ftm"]}}}, "'ftm'.*allowed"),
             ({"experiments": {"scoring": ["max"]}}, r"\['max'\].*hyb, sum, avg"),
             ({"experiments": {"seesaw": {"forget_fraction": 1.0}}}, "forget_fraction = 1.0")]
    for override, match in cases:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(merge(base, override)))
        with pytest.raises(ParamsError, match=match):
            load_params(path)
