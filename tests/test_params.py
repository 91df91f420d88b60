"""params.yaml validation: unknown, missing and malformed values are one-line errors that name the key.

The loader (lib.core.params) reads the file and hands sections out; each section is validated by the schema
that lives next to the code reading it (flows.check.SECTIONS, a method's Config), and flows.check.check_params
validates a whole file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import lib.core.params
from flows.check import SECTIONS, TRACK_METHODS, check_params
from lib.core.finetune import FinetuneConfig, TrainConfig
from lib.core.params import ParamsError, load_params
from lib.core.presets import merge, merged_text, write_merged
from lib.data.records import CATEGORIES, PipelineConfig
from lib.methods import BY_CATEGORY, gare, get, make_config, snku

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def base() -> dict:
    """The project's params.yaml as plain data."""
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def dump(tmp_path: Path, params: dict, name: str = "params.yaml") -> Path:
    """`params` written as a YAML file under tmp_path."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def write(tmp_path: Path, mutate) -> Path:
    """A copy of the project's params.yaml changed by `mutate`."""
    params = base()
    mutate(params)
    return dump(tmp_path, params)


def check_error(path: Path) -> str:
    """The one-line ParamsError message check_params gives for `path`."""
    with pytest.raises(ParamsError) as err:
        check_params(str(path))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_project_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    tel = make_config("snku", params.get("methods.snku"), "TEL")
    assert isinstance(tel, snku.Config) and tel.alpha == pytest.approx(0.9997)
    assert isinstance(params.get("finetune", FinetuneConfig).learning_rate, float)
    assert params.get("methods.snku")["k"] == tel.k  # the raw section is plain data
    assert isinstance(params.get("seed"), int)


def test_check_params_accepts_the_project_params() -> None:
    params = check_params(str(ROOT / "params.yaml"))
    for key, schema in SECTIONS.items():  # every section builds with its schema
        params.get(key, schema)
    assert set(TRACK_METHODS) == {"methods", "causal.methods", "benchmarks.methods"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_check_params_accepts_every_preset_merged(tmp_path: Path, preset: Path) -> None:
    merged = merge(base(), yaml.safe_load(preset.read_text(encoding="utf-8")))
    check_params(str(dump(tmp_path, merged)))


def test_presets_exist() -> None:
    assert {p.stem for p in PRESETS} >= {"full", "bert_large", "quick", "tofu"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_writing_a_preset_keeps_comments_and_gives_the_merged_values(tmp_path: Path, preset: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    write_merged(params, ROOT / "presets", preset.stem)
    assert yaml.safe_load(params.read_text()) == yaml.safe_load(merged_text(ROOT / "params.yaml", ROOT / "presets",
                                                                            preset.stem))
    comments = [line.split("#", 1)[1] for line in (ROOT / "params.yaml").read_text().splitlines() if "#" in line]
    written = params.read_text()
    kept = sum(c in written for c in comments)
    assert kept >= 0.9 * len(comments), (kept, len(comments))
    assert not list(tmp_path.glob(".*"))  # no temp sibling left


def test_an_unknown_preset_names_the_ones_there(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\n")
    with pytest.raises(ValueError, match="unknown preset 'quik'; allowed: .*quick"):
        write_merged(params, ROOT / "presets", "quik")
    assert params.read_text() == "seed: 0\n"


@pytest.mark.parametrize("mutate, fragments", [
    (lambda p: p["finetune"].update(learnin_rate=1), ["unknown key finetune.learnin_rate", "learning_rate"]),
    (lambda p: p["data"].pop("seed"), ["missing key data.seed"]),  # a key without a default
    (lambda p: p.pop("finetune"), ["missing key finetune"]),  # a whole section
    (lambda p: p["finetune"].update(learning_rate="abc"), ["finetune.learning_rate = 'abc' is not a number"]),
    (lambda p: p["finetune"].update(epochs=2.5), ["finetune.epochs = 2.5"]),
    (lambda p: p["memorized"]["thresholds"].update(TEL="high"), ["memorized", "thresholds", "'TEL': 'high'"]),
    (lambda p: p["memorized"]["thresholds"].pop("NAME"), ["memorized", "thresholds", "NAME"]),
    (lambda p: p["pipeline"].update(methods=["snku", "magic"]), ["pipeline.methods contains 'magic'", "'snku'"]),
    (lambda p: p["pipeline"].update(categories=["SSN"]), ["pipeline", "'SSN'"]),
    (lambda p: p["methods"]["snku"].update(k=0), ["methods.snku.k = 0 invalid; allowed: an integer >= 1"]),
    (lambda p: p["methods"]["snku"][BY_CATEGORY].update(SSN={"alpha": 0.9}), ["methods.snku.by_category.SSN"]),
    (lambda p: p["methods"]["snku"][BY_CATEGORY]["NAME"].update(alpha=1.5),
     ["methods.snku.by_category.NAME.alpha = 1.5 invalid; allowed: a number in (0, 1]"]),
    (lambda p: p["methods"]["random"][BY_CATEGORY]["TEL"].update(sigmaa=0.1),
     ["unknown key methods.random.by_category.TEL.sigmaa", "'sigma'"]),
    (lambda p: p["data"].update(source="web"), ["data", "source='web'", "generated"]),
])
def test_bad_params_name_the_key(tmp_path: Path, mutate, fragments: list[str]) -> None:
    msg = check_error(write(tmp_path, mutate))
    assert all(f in msg for f in fragments), msg


def test_unknown_top_level_key_and_unknown_method_sections(tmp_path: Path) -> None:
    msg = check_error(write(tmp_path, lambda p: p.update(finetuning={"epochs": 1})))
    assert "unknown key finetuning" in msg and "'finetune'" in msg
    for track in TRACK_METHODS:
        def mutate(p, track=track):
            node = p
            for part in track.split("."):
                node = node[part]
            node["magic"] = {"k": 1}
        msg = check_error(write(tmp_path, mutate))
        assert f"unknown key {track}.magic" in msg and "'snku'" in msg, msg


def test_section_key_may_be_omitted_for_the_configs_default(tmp_path: Path) -> None:
    def mutate(p):
        for key in ("warmup_fraction", "k"):
            p["methods"]["gare"].pop(key)
        p["finetune"].pop("epochs")

    path = write(tmp_path, mutate)
    params = check_params(str(path))
    section = params.get("methods.gare")
    assert "warmup_fraction" not in section and "k" not in section
    cfg = make_config("gare", section, "TEL", where="methods.gare")
    assert cfg.warmup_fraction == gare.Config().warmup_fraction
    assert cfg.k == gare.Config().k != base()["methods"]["gare"]["k"]  # the default, not the file's old value
    assert cfg.epochs == base()["methods"]["gare"]["epochs"]  # keys still present keep their values
    assert params.get("finetune", FinetuneConfig).epochs == FinetuneConfig().epochs


def test_by_category_overrides_apply_per_category() -> None:
    section = load_params(ROOT / "params.yaml").get("methods.snku")
    per = section[BY_CATEGORY]
    tel, name = make_config("snku", section, "TEL"), make_config("snku", section, "NAME")
    assert (tel.alpha, tel.sigma) == (pytest.approx(per["TEL"]["alpha"]), pytest.approx(per["TEL"]["sigma"]))
    assert (name.alpha, name.sigma) == (pytest.approx(per["NAME"]["alpha"]), pytest.approx(per["NAME"]["sigma"]))
    assert tel.alpha != name.alpha and tel.sigma != name.sigma
    assert tel.k == name.k == section["k"] and tel.top_m == name.top_m == section["top_m"]  # shared keys
    # a category without its own values takes the section's (here: the Config's defaults)
    only_tel = {**section, BY_CATEGORY: {"TEL": per["TEL"]}}
    plain = make_config("snku", only_tel, "NAME")
    assert (plain.alpha, plain.sigma) == (snku.Config().alpha, snku.Config().sigma)
    assert make_config("snku", only_tel, "TEL").alpha == pytest.approx(per["TEL"]["alpha"])
    # overrides (the experiments' sweeps) win over the category's values
    assert make_config("snku", section, "TEL", overrides={"alpha": 0.5}).alpha == 0.5


def test_by_category_values_are_validated_for_each_category() -> None:
    section = {"k": 10, BY_CATEGORY: {"TEL": {"alpha": 0.9}, "NAME": {"alpha": 2.0}}}
    assert make_config("snku", section, "TEL").alpha == 0.9
    with pytest.raises(ParamsError, match=r"methods\.snku\.by_category\.NAME\.alpha = 2\.0 invalid; allowed: a number"):
        make_config("snku", section, "NAME")
    with pytest.raises(ParamsError, match=r"unknown key methods\.snku\.by_category\.TELL.*'TEL'"):
        make_config("snku", {BY_CATEGORY: {"TELL": {"alpha": 0.9}}}, "TEL")
    with pytest.raises(ParamsError, match=r"methods\.snku\.by_category"):
        make_config("snku", {BY_CATEGORY: {"TEL": 0.9}}, "TEL")
    assert set(CATEGORIES) == set(PipelineConfig(methods=("snku",)).categories)


def test_numbers_written_as_strings_are_parsed(tmp_path: Path) -> None:
    params = check_params(str(write(tmp_path, lambda p: p["finetune"].update(learning_rate="3e-4"))))
    assert params.get("finetune", FinetuneConfig).learning_rate == pytest.approx(3e-4)


def test_a_section_is_validated_when_it_is_asked_for(tmp_path: Path) -> None:
    """load_params reads; only the section asked for is built, with the caller's schema."""
    params = load_params(write(tmp_path, lambda p: p["finetune"].update(epochs="many")))
    assert params.get("causal.finetune", TrainConfig).epochs == base()["causal"]["finetune"]["epochs"]
    with pytest.raises(ParamsError, match="finetune.epochs = 'many'"):
        params.get("finetune", FinetuneConfig)
    with pytest.raises(ParamsError, match=r"missing key causal\.nothing; keys under causal: \["):
        params.get("causal.nothing")
    assert params.fingerprint("causal.finetune") == load_params(ROOT / "params.yaml").fingerprint("causal.finetune")
    assert params.fingerprint("finetune") != load_params(ROOT / "params.yaml").fingerprint("finetune")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    for load in (load_params, check_params):
        with pytest.raises(ParamsError, match="not found"):
            load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="not a mapping"):
        load_params(listed)


def test_params_loader_imports_no_project_module() -> None:
    """The params loader imports no method (nor any other project module): schemas live with their code."""
    tree = ast.parse(Path(lib.core.params.__file__).read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in lib/core/params.py: level {node.level}"
            imported.append(node.module or "")
    assert imported and "yaml" in imported
    project = [m for m in imported if m.split(".")[0] in ("lib", "tasks", "flows", "tests")]
    assert project == [], project


def test_preset_merge_overrides_nested_keys_only() -> None:
    base_ = {"a": {"b": 1, "c": 2}, "d": 3}
    assert merge(base_, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    with pytest.raises(ValueError, match="preset key a.z does not exist"):
        merge(base_, {"a": {"z": 1}})


def test_merge_replaces_benchmark_runs_whole() -> None:
    """benchmarks.runs is a mapping of user-chosen names: a preset replaces it, new names allowed."""
    base_ = {"benchmarks": {"runs": {"tofu_forget01": {"suite": "tofu"}}, "batch_size": 16}}
    runs = {"tofu_forget05": {"suite": "tofu"}, "lume": {"suite": "lume"}}
    assert merge(base_, {"benchmarks": {"runs": runs}}) == {"benchmarks": {"runs": runs, "batch_size": 16}}


def test_merge_replaces_calibration_spaces_whole() -> None:
    """A track's calibration spaces are keyed by method: a preset gives the whole mapping, new methods allowed."""
    base_ = {"causal": {"calibration": {"spaces": {"ga": {"max_steps": {"low": 1, "high": 10}}}, "n_trials": 6}}}
    spaces = {"sga": {"max_steps": {"low": 1, "high": 20}}}
    merged = merge(base_, {"causal": {"calibration": {"spaces": spaces}}})
    assert merged["causal"]["calibration"] == {"spaces": spaces, "n_trials": 6}


def test_all_methods_preset_calibrates_every_method_on_every_track(tmp_path: Path) -> None:
    """presets/all_methods.yaml searches every method a track runs (the fine-tuned model's row, ftm, has no strength)
    and no corner of a space is a value the method refuses, so no trial is lost to a bound."""
    import itertools

    from lib.core.calibration import CalibrationConfig, is_integer

    merged = merge(base(), yaml.safe_load((ROOT / "presets" / "all_methods.yaml").read_text(encoding="utf-8")))
    params = check_params(str(dump(tmp_path, merged)))
    categories = params.get("pipeline", PipelineConfig).categories
    for prefix, pipeline, cats in (("", "pipeline.methods", categories), ("causal.", "causal.pipeline", [None]),
                                   ("benchmarks.", "benchmarks.pipeline", [None])):
        cal = params.get(f"{prefix}calibration", CalibrationConfig)
        assert set(cal.methods) == set(params.get(pipeline)) - {"ftm"}, prefix
        for method in cal.methods:
            space, config = cal.spaces[method], get(method).Config
            for corner in itertools.product(*((r.low, r.high) for r in space.values())):
                values = {n: int(v) if is_integer(config, n) else v for n, v in zip(space, corner)}
                for category in cats:
                    make_config(method, params.get(f"{prefix}methods.{method}"), category, values)
    default = load_params(ROOT / "params.yaml")
    for prefix in ("", "causal.", "benchmarks."):  # the default's searches keep their spaces (and cached trials)
        kept = default.get(f"{prefix}calibration", CalibrationConfig)
        assert {m: kept.spaces[m] for m in kept.methods} == {
            m: params.get(f"{prefix}calibration", CalibrationConfig).spaces[m] for m in kept.methods}, prefix


def test_full_preset_is_valid(tmp_path: Path) -> None:
    from lib.bench.suites import BenchConfig, suite

    merged = merge(base(), yaml.safe_load((ROOT / "presets" / "full.yaml").read_text()))
    params = check_params(str(dump(tmp_path, merged)))
    assert params.get("finetune", FinetuneConfig).model == "bert-base-uncased"
    assert set(params.get("benchmarks", BenchConfig).runs) == {"tofu_forget01", "tofu_forget05", "tofu_forget10",
                                                              "lume"}
    simu = make_config("simu", params.get("benchmarks.methods.simu"), where="benchmarks.methods.simu")
    assert simu.max_targets is None
    assert params.get("benchmarks.tofu", suite("tofu").Config).n_retain_authors is None


def test_tofu_preset_adds_tofu_forget01_beside_lume(tmp_path: Path) -> None:
    """The CPU default benchmarks LUME only; presets/tofu.yaml adds TOFU forget01 at the CPU sizes."""
    from lib.bench.suites import BenchConfig

    assert set(check_params(str(ROOT / "params.yaml")).get("benchmarks", BenchConfig).runs) == {"lume"}
    merged = merge(base(), yaml.safe_load((ROOT / "presets" / "tofu.yaml").read_text()))
    bench = check_params(str(dump(tmp_path, merged))).get("benchmarks", BenchConfig)
    assert set(bench.runs) == {"tofu_forget01", "lume"} and set(bench.suites) == {"tofu", "lume"}


def test_bert_large_preset_on_top_of_full_is_valid(tmp_path: Path) -> None:
    """Table 2's preset: full, then bert_large; every method keeps one neuron budget."""
    merged = base()
    for name in ("full", "bert_large"):
        merged = merge(merged, yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text()))
    params = check_params(str(dump(tmp_path, merged)))
    assert params.get("finetune", FinetuneConfig).model == "bert-large-uncased"
    categories = params.get("pipeline", PipelineConfig).categories
    ks = {make_config(m, params.get(f"methods.{m}"), c).k
          for m in ("gare", "depn", "apneap", "snku", "random") for c in categories}
    assert ks == {300}


@pytest.mark.parametrize("override, match", [
    ({"methods": {"depn": {"aggregate": "mean"}}}, r"methods\.depn.*aggregate='mean'"),
    ({"ig": {"grid": "trapezoid"}}, r"ig.*trapezoid"),
    ({"experiments": {"budget": {"methods": ["ftm"]}}}, r"experiments\.budget\.methods.*'ftm'.*allowed.*'snku'"),
    ({"experiments": {"scoring": ["max"]}}, r"experiments.*\['max'\].*hyb, sum, avg"),
    ({"experiments": {"seesaw": {"forget_fraction": 1.0}}}, r"experiments\.seesaw.*forget_fraction = 1\.0"),
])
def test_bad_method_config_and_experiment_values_are_errors(tmp_path: Path, override: dict, match: str) -> None:
    """Values a method or sweep cannot use stop at check time, naming the value and what is allowed."""
    with pytest.raises(ParamsError, match=match):
        check_params(str(dump(tmp_path, merge(base(), override))))


def test_every_method_section_builds_its_config() -> None:
    params = load_params(ROOT / "params.yaml")
    for track, (_, family) in TRACK_METHODS.items():
        for name, section in params.get(track).items():
            cfg = make_config(name, section, "TEL" if track == "methods" else None, where=f"{track}.{name}")
            assert isinstance(cfg, get(name).Config), (track, name)
            assert family in get(name).families, (track, name)
