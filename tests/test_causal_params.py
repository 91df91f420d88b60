"""params.yaml section `causal`: types, registered methods, sources, method Configs built and validated."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.check import check_params
from lib.core.finetune import TrainConfig
from lib.core.params import ParamsError, load_params
from lib.data.emails import EmailsConfig
from lib.methods import get, make_config, neumuter

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
CAUSAL_METHODS = tuple(RAW["causal"]["methods"])  # the causal track's method sections


def write(tmp_path: Path, mutate) -> Path:
    """A copy of the project's params.yaml (anchors resolved) changed by `mutate`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def causal_error(tmp_path: Path, mutate) -> str:
    """The one-line ParamsError message that checking the mutated params gives."""
    with pytest.raises(ParamsError) as err:
        check_params(str(write(tmp_path, mutate)))
    assert "\n" not in str(err.value)
    return str(err.value)


def method_config(params, name: str, track: str = "causal.methods"):
    """The Config of one method section of a track."""
    return make_config(name, params.get(f"{track}.{name}"), where=f"{track}.{name}")


def test_project_params_load() -> None:
    params = check_params(str(ROOT / "params.yaml"))
    data = params.get("causal.data", EmailsConfig)
    assert data.source == "generated" and data.path is None
    assert tuple(data.copies) == (8, 16, 24) and data.secrets_per_category["TEL"] == 12
    finetune = params.get("causal.finetune", TrainConfig)
    assert isinstance(finetune.learning_rate, float) and finetune.learning_rate == pytest.approx(1e-4)
    neu = method_config(params, "neumuter")
    assert isinstance(neu, neumuter.Config)
    assert neu.layers is None and neu.selection == "energy"
    assert {"neumuter", "ga", "sga", "ta", "di", "ig", "simu", "fo_graddiff", "so_graddiff", "sp"} <= set(CAUSAL_METHODS)
    for name in CAUSAL_METHODS:
        assert isinstance(method_config(params, name), get(name).Config), name
        assert "causal" in get(name).families, name
    assert set(params.get("causal.pipeline", list[str])) <= set(CAUSAL_METHODS)
    assert params.get("causal.model", str) == RAW["causal"]["model"]


def test_section_of_a_method_config_is_plain_data() -> None:
    params = load_params(ROOT / "params.yaml")
    neu = params.get("causal.methods.neumuter")
    raw = RAW["causal"]
    assert isinstance(neu["lambda_kl"], float) and neu["lambda_kl"] == raw["methods"]["neumuter"]["lambda_kl"]
    assert neu["layers"] is None
    assert params.get("causal.data")["copies"] == raw["data"]["copies"]
    # the digest of a section's plain data keys cached runs and MLflow params
    assert params.fingerprint("causal.methods.neumuter") == params.fingerprint("causal.methods.neumuter")
    assert params.fingerprint("causal.methods.neumuter") != params.fingerprint("causal.methods.ga")


def test_unknown_key_under_data(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["data"].update(max_lenght=32))
    assert "unknown key causal.data.max_lenght" in msg and "max_len" in msg


def test_unknown_key_under_causal(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"].update(retain_sample=64))
    assert "unknown key causal.retain_sample" in msg and "retain_samples" in msg


def test_missing_key_under_finetune(tmp_path: Path) -> None:
    """A key with a default may be left out (the schema's default is used); a missing section is an error."""
    params = check_params(str(write(tmp_path, lambda p: p["causal"]["finetune"].pop("seed"))))
    assert params.get("causal.finetune", TrainConfig).seed == TrainConfig().seed
    msg = causal_error(tmp_path, lambda p: p["causal"].pop("finetune"))
    assert "missing key causal.finetune" in msg


def test_unregistered_pipeline_method(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"].update(pipeline=["neumuter", "magic"]))
    assert "causal.pipeline contains 'magic'" in msg
    assert all(repr(name) in msg for name in CAUSAL_METHODS)


def test_apneap_is_a_causal_pipeline_item(tmp_path: Path) -> None:
    """APNEAP runs on causal LMs too (span tokens swapped for its counterparts): a valid causal and benchmark item,
    its section checked like any other, a bad value named by key."""
    def mutate(p):
        p["causal"]["methods"]["apneap"] = {"k": 8, "alpha": 0.0}
        p["causal"]["pipeline"] = ["neumuter", "apneap"]
        p["benchmarks"]["pipeline"] = ["apneap"]

    msg = causal_error(tmp_path, mutate)
    assert "causal.methods.apneap.alpha" in msg, msg


def test_neuron_methods_on_the_causal_tracks(tmp_path: Path) -> None:
    """The neuron methods that read statistics (SNKU, DEPN) are valid causal and benchmark pipeline items; the
    statistics' section is checked like any other, its bad values named by key."""
    def mutate(p):
        p["causal"]["pipeline"] = ["snku", "depn", "gare", "random"]
        p["benchmarks"]["pipeline"] = ["snku", "depn"]

    check_params(str(write(tmp_path, mutate)))
    msg = causal_error(tmp_path, lambda p: p["causal"]["neurons"].update(targets="secret"))
    assert "targets" in msg and "span" in msg
    msg = causal_error(tmp_path, lambda p: p["benchmarks"]["neurons"].update(k_max=0))
    assert "benchmarks.neurons.k_max" in msg


def test_by_category_outside_the_masked_track(tmp_path: Path) -> None:
    """Per-category overrides would be ignored on a track without categories: an error, not silence."""
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["ga"].update(by_category={"TEL": {"max_steps": 3}}))
    assert "causal.methods.ga.by_category" in msg and "masked" in msg


def test_tdec_source_needs_a_path(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["data"].update(source="tdec", path=None))
    assert "causal.data" in msg and "path is required" in msg and "'tdec'" in msg
    loaded = check_params(str(write(tmp_path, lambda p: p["causal"]["data"].update(source="jsonl", path="c.jsonl"))))
    assert loaded.get("causal.data", EmailsConfig).path == "c.jsonl"


def test_unknown_source(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["data"].update(source="web"))
    assert "causal.data" in msg and "source='web'" in msg and "tdec" in msg


def test_bad_selection_is_wrapped_as_params_error(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["neumuter"].update(selection="bogus"))
    assert "'bogus'" in msg and "causal.methods.neumuter" in msg and "energy" in msg


def test_unknown_method_config_key(tmp_path: Path) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["ga"].update(lr=1.0))
    assert "unknown key causal.methods.ga.lr" in msg and "learning_rate" in msg


def test_layers_list_becomes_a_tuple(tmp_path: Path) -> None:
    params = check_params(str(write(tmp_path, lambda p: p["causal"]["methods"]["neumuter"].update(layers=[0, 1]))))
    layers = method_config(params, "neumuter").layers
    assert layers == (0, 1) and isinstance(layers, tuple)


@pytest.mark.parametrize("layers, fragment", [([0, "x"], "layers[1] = 'x'"), (3, "layers = 3"),
                                              ([1, 1], "layers=(1, 1) invalid")])
def test_bad_layers(tmp_path: Path, layers, fragment: str) -> None:
    msg = causal_error(tmp_path, lambda p: p["causal"]["methods"]["neumuter"].update(layers=layers))
    assert fragment in msg and "causal.methods.neumuter" in msg


@pytest.mark.parametrize("mutate, fragments", [
    (lambda p: p["causal"]["data"].update(max_len=0), ["causal.data.max_len = 0", "an integer >= 1"]),
    (lambda p: p["causal"]["neighbours"].update(k=0), ["causal.neighbours.k = 0", "an integer >= 1"]),
    (lambda p: p["causal"]["neighbours"].update(ratio=1.5), ["causal.neighbours.ratio = 1.5", "(0, 1]"]),
    (lambda p: p["causal"]["memorized"].update(n_forget=-2), ["causal.memorized.n_forget = -2", "an integer >= 1"]),
    (lambda p: p["causal"]["finetune"].update(learning_rate="fast"), ["causal.finetune.learning_rate = 'fast'"]),
    (lambda p: p["causal"]["data"].update(tdec_limit="all"), ["causal.data.tdec_limit = 'all'"]),
    (lambda p: p["causal"].update(retain_samples="many"), ["causal.retain_samples = 'many'", "int expected"]),
    (lambda p: p["causal"].update(retain_samples=True), ["causal.retain_samples = True is not an int"]),
    (lambda p: p["causal"].update(retain_samples=0), ["causal.retain_samples = 0", "an integer >= 1"]),
    (lambda p: p["causal"].update(retain_samples=-1), ["causal.retain_samples = -1", "an integer >= 1"]),
    (lambda p: p["causal"].update(model=3), ["causal.model = 3"]),
])
def test_bad_causal_values_name_the_key(tmp_path: Path, mutate, fragments: list[str]) -> None:
    msg = causal_error(tmp_path, mutate)
    assert all(f in msg for f in fragments), msg


def test_numbers_as_strings_and_nullable_ints(tmp_path: Path) -> None:
    def mutate(p):
        p["causal"]["finetune"]["learning_rate"] = "3e-5"
        p["causal"]["data"]["tdec_limit"] = 100

    params = check_params(str(write(tmp_path, mutate)))
    assert params.get("causal.finetune", TrainConfig).learning_rate == pytest.approx(3e-5)
    assert params.get("causal.data", EmailsConfig).tdec_limit == 100
