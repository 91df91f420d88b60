"""params.yaml section `causal`: types, registered methods, sources, method Configs built and validated."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lib.methods import CAUSAL_METHODS
from lib.methods import neumuter
from lib.core.params import ParamsError, load_params, section

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, mutate) -> Path:
    """A copy of the project's params.yaml changed by `mutate`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def causal_error(tmp_path: Path, mutate) -> str:
    """The one-line ParamsError message that loading the mutated params gives."""
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, mutate))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_project_params_load() -> None:
    causal = load_params(ROOT / "params.yaml").causal
    assert causal.data.source == "generated" and causal.data.path is None
    assert causal.data.copies == [8, 16, 24] and causal.data.secrets_per_category["TEL"] == 12
    assert isinstance(causal.finetune.learning_rate, float) and causal.finetune.learning_rate == pytest.approx(1e-4)
    assert isinstance(causal.methods.neumuter, neumuter.Config)
    assert causal.methods.neumuter.layers is None and causal.methods.neumuter.selection == "energy"
    for name in CAUSAL_METHODS:
        assert isinstance(getattr(causal.methods, name), CAUSAL_METHODS[name].Config), name
    assert set(causal.pipeline) <= set(CAUSAL_METHODS)


def test_section_of_a_method_config_is_plain_data() -> None:
    params = load_params(ROOT / "params.yaml")
    neu = section(params, "causal.methods.neumuter")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["causal"]
    assert isinstance(neu["lambda_kl"], float) and neu["lambda_kl"] == raw["methods"]["neumuter"]["lambda_kl"]
    assert neu["layers"] is None
    assert section(params, "causal.data")["copies"] == raw["data"]["copies"]


def test_unknown_key_under_data(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["data"].update(max_lenght=32))
    assert "unknown key params.causal.data.max_lenght" in msg and "max_len" in msg


def test_missing_key_under_finetune(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["finetune"].pop("seed"))
    assert "missing key params.causal.finetune.seed" in msg


def test_unregistered_pipeline_method(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"].update(pipeline=["neumuter", "magic"]))
    assert "causal.pipeline contains 'magic'" in msg
    assert all(repr(name) in msg for name in CAUSAL_METHODS)


def test_tdec_source_needs_a_path(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["data"].update(source="tdec", path=None))
    assert "causal.data.path is required" in msg and "'tdec'" in msg
    loaded = load_params(write(tmp_path, lambda p: p["causal"]["data"].update(source="jsonl", path="c.jsonl")))
    assert loaded.causal.data.path == "c.jsonl"


def test_unknown_source(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["data"].update(source="web"))
    assert "causal.data.source = 'web'" in msg and "'tdec'" in msg


def test_bad_selection_is_wrapped_as_params_error(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["neumuter"].update(selection="bogus"))
    assert "'bogus'" in msg and "params.causal.methods.neumuter" in msg and "energy" in msg


def test_unknown_method_config_key(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["ga"].update(lr=1.0))
    assert "unknown key params.causal.methods.ga.lr" in msg


def test_layers_list_becomes_a_tuple(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, lambda p: p["causal"]["methods"]["neumuter"].update(layers=[0, 1])))
    assert params.causal.methods.neumuter.layers == (0, 1)
    assert isinstance(params.causal.methods.neumuter.layers, tuple)


@pytest.mark.parametrize("layers, fragment", [([0, "x"], "layers[1] = 'x'"), (3, "layers = 3"),
                                              ([1, 1], "layers=(1, 1) invalid")])
def test_bad_layers(tmp_path: Path, layers, fragment: str) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["neumuter"].update(layers=layers))
    assert fragment in msg


@pytest.mark.parametrize("mutate, fragment", [
    (lambda p: p["causal"]["data"].update(max_len=0), "causal.data.max_len = 0"),
    (lambda p: p["causal"]["neighbours"].update(k=0), "causal.neighbours.k = 0"),
    (lambda p: p["causal"]["neighbours"].update(ratio=1.5), "causal.neighbours.ratio = 1.5"),
    (lambda p: p["causal"]["memorized"].update(n_forget=-2), "causal.memorized.n_forget = -2"),
    (lambda p: p["causal"]["finetune"].update(learning_rate="fast"), "causal.finetune.learning_rate = 'fast'"),
    (lambda p: p["causal"]["data"].update(tdec_limit="all"), "causal.data.tdec_limit = 'all'"),
])
def test_bad_causal_values_name_the_key(tmp_path: Path, mutate, fragment: str) -> None:
    assert fragment in causal_error(tmp_path, mutate)


def test_numbers_as_strings_and_nullable_ints(tmp_path: Path) -> None:
    def mutate(p):
        p["causal"]["finetune"]["learning_rate"] = "3e-5"
        p["causal"]["data"]["tdec_limit"] = 100

    causal = load_params(write(tmp_path, mutate)).causal
    assert causal.finetune.learning_rate == pytest.approx(3e-5) and causal.data.tdec_limit == 100
