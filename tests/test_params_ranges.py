"""Every params.yaml number and name has a type and a range, checked when its section is loaded.

A bad value in a real key of the project's params.yaml stops the stage that reads it (loaded the way that stage
loads it) and `flows.check` with one line naming the key path, the value and what is allowed; every schema field
reachable from the params sections declares a range type (lib.core.params.RANGES) unless an allow-list says why
a negative value is legitimate.
"""
from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.check import SECTIONS, TRACK_METHODS, check_params
from lib.bench.suites import SUITES, suite
from lib.core.params import (RANGES, Count, Natural, NonEmpty, ParamsError, Positive, PositiveFraction, build,
                             check_ranges, load_params)
from lib.methods import METHODS, gare, get, make_config, so_graddiff

ROOT = Path(__file__).resolve().parents[1]
INT, POS, NONNEG = "an integer >= 1", "a finite number > 0", "a finite number >= 0"
FRACTION, POS_FRACTION, OPEN_FRACTION = "a number in [0, 1]", "a number in (0, 1]", "a number in (0, 1)"
NATURAL, NAME = "an integer >= 0", "a non-empty string"

# (dotted key in params.yaml, bad value, the key path the message names, what it says is allowed)
BAD = [
    # masked track
    ("seed", -1, "seed", NATURAL),
    ("data.n_background_emails", 0, "data.n_background_emails", INT),
    ("data.n_controls_per_category", -5, "data.n_controls_per_category", NATURAL),
    ("data.secrets_per_category.TEL", -1, "data.secrets_per_category.TEL", NATURAL),
    ("data.valid_fraction", 1.0, "data.valid_fraction", OPEN_FRACTION),
    ("finetune.learning_rate", 0, "finetune.learning_rate", POS),
    ("finetune.learning_rate", -5e-4, "finetune.learning_rate", POS),
    ("finetune.batch_size", -8, "finetune.batch_size", INT),
    ("finetune.epochs", -1, "finetune.epochs", NATURAL),
    ("finetune.warmup_fraction", 1.5, "finetune.warmup_fraction", FRACTION),
    ("finetune.weight_decay", -0.01, "finetune.weight_decay", NONNEG),
    ("finetune.mask_prob", 1.0, "finetune.mask_prob", OPEN_FRACTION),
    ("finetune.model", "", "finetune.model", NAME),
    ("memorized.control_quantile", 1.0, "memorized.control_quantile", OPEN_FRACTION),
    ("memorized.batch_size", 0, "memorized.batch_size", INT),
    ("attribution.shard_size", 0, "attribution.shard_size", INT),
    ("clustering.threshold", 0.0, "clustering.threshold", POS),
    ("ig.steps", 0, "ig.steps", INT),
    ("ig.max_rows_per_batch", -1, "ig.max_rows_per_batch", INT),
    ("evaluate.valid_mask_prob", 0.0, "evaluate.valid_mask_prob", POS_FRACTION),
    ("evaluate.max_valid_texts", 0, "evaluate.max_valid_texts", INT),
    ("methods.gare.learning_rate", -5e-5, "methods.gare.learning_rate", POS),
    ("methods.gare.warmup_fraction", 2.0, "methods.gare.warmup_fraction", FRACTION),
    ("methods.depn.per_text_threshold", 1.5, "methods.depn.per_text_threshold", FRACTION),
    ("methods.apneap.alpha", 0.0, "methods.apneap.alpha", POS),
    ("methods.snku.top_m", 0, "methods.snku.top_m", INT),
    ("methods.snku.min_avg_frac", 2.0, "methods.snku.min_avg_frac", FRACTION),
    ("methods.snku.by_category.TEL.sigma", -0.1, "methods.snku.by_category.TEL.sigma", NONNEG),
    ("methods.random.by_category.NAME.alpha", 0.0, "methods.random.by_category.NAME.alpha", POS_FRACTION),
    ("methods.npo.beta", 0.0, "methods.npo.beta", POS),
    ("methods.simnpo.batch_size", -8, "methods.simnpo.batch_size", INT),
    ("methods.rmu.alpha", -1.0, "methods.rmu.alpha", NONNEG),
    # experiments
    ("experiments.seeds", [0, -1], "experiments.seeds[1]", NATURAL),
    ("experiments.budget.ks", [100, 0], "experiments.budget.ks[1]", INT),
    ("experiments.noise.k", 0, "experiments.noise.k", INT),
    ("experiments.noise.sigmas", [0.05, -0.1], "experiments.noise.sigmas[1]", NONNEG),
    ("experiments.decay.alphas", [0.9, 1.5], "experiments.decay.alphas[1]", POS_FRACTION),
    ("experiments.seesaw.forget_fraction", 0.0, "experiments.seesaw.forget_fraction", OPEN_FRACTION),
    # mlflow
    ("mlflow.tracking_uri", "", "mlflow.tracking_uri", NAME),
    ("mlflow.experiment", "  ", "mlflow.experiment", NAME),
    ("mlflow.artifact_location", "", "mlflow.artifact_location", NAME),
    # compute
    ("compute.threads", 0, "compute.threads", INT + ", or null"),
    ("compute.workers", 0, "compute.workers", INT + ", or null"),
    ("compute.processes", -2, "compute.processes", INT),
    ("compute.ray_address", "", "compute.ray_address", NAME + ", or null"),
    # causal track
    ("causal.model", "", "causal.model", NAME),
    ("causal.retain_samples", 0, "causal.retain_samples", INT),
    ("causal.data.valid_fraction", 0.0, "causal.data.valid_fraction", OPEN_FRACTION),
    ("causal.data.copies", [8, 0], "causal.data.copies[1]", INT),
    ("causal.data.n_public", 0, "causal.data.n_public", INT),
    ("causal.finetune.learning_rate", 0.0, "causal.finetune.learning_rate", POS),
    ("causal.finetune.batch_size", -1, "causal.finetune.batch_size", INT),
    ("causal.memorized.el_max_new", 0, "causal.memorized.el_max_new", INT + ", or null"),
    ("causal.memorized.shard_size", 0, "causal.memorized.shard_size", INT),
    ("causal.neighbours.mlm", "", "causal.neighbours.mlm", NAME),
    ("causal.neighbours.mlm_learning_rate", -1.0, "causal.neighbours.mlm_learning_rate", POS),
    ("causal.evaluate.example_tokens", 0, "causal.evaluate.example_tokens", INT),
    ("causal.methods.neumuter.energy_fraction", 0.0, "causal.methods.neumuter.energy_fraction", POS_FRACTION),
    ("causal.methods.neumuter.gate_threshold", 1.0, "causal.methods.neumuter.gate_threshold", OPEN_FRACTION),
    ("causal.methods.neumuter.lambda_kl", -1.0, "causal.methods.neumuter.lambda_kl", NONNEG),
    ("causal.methods.ga.learning_rate", 0.0, "causal.methods.ga.learning_rate", POS),
    ("causal.methods.sga.limit", 1.5, "causal.methods.sga.limit", FRACTION),
    ("causal.methods.ta.tau_step", 0.0, "causal.methods.ta.tau_step", POS),
    ("causal.methods.di.strength", -8.0, "causal.methods.di.strength", POS),
    ("causal.methods.ig.n_start", 0, "causal.methods.ig.n_start", INT),
    ("causal.methods.simu.threshold", 0.0, "causal.methods.simu.threshold", POS_FRACTION),
    ("causal.methods.simu.betas", [0.965, 1.5], "causal.methods.simu.betas[1]", FRACTION),
    ("causal.methods.so_graddiff.eps", 0.0, "causal.methods.so_graddiff.eps", POS),
    ("causal.methods.fo_graddiff.weight_decay", -0.1, "causal.methods.fo_graddiff.weight_decay", NONNEG),
    ("causal.methods.sp.ffn_fraction", 1.5, "causal.methods.sp.ffn_fraction", FRACTION),
    ("causal.methods.sp.max_tokens", 0, "causal.methods.sp.max_tokens", INT),
    # benchmarks
    ("benchmarks.batch_size", -16, "benchmarks.batch_size", INT),
    ("benchmarks.data_root", "", "benchmarks.data_root", NAME + ", or null"),
    ("benchmarks.tofu.n_retain_authors", 0, "benchmarks.tofu.n_retain_authors", INT + ", or null"),
    ("benchmarks.tofu.finetune.learning_rate", 0.0, "benchmarks.tofu.finetune.learning_rate", POS),
    ("benchmarks.lume.holdout_fraction", 1.0, "benchmarks.lume.holdout_fraction", OPEN_FRACTION),
    ("benchmarks.lume.n_forget", -3, "benchmarks.lume.n_forget", INT + ", or null"),
    ("benchmarks.lume.hub", "", "benchmarks.lume.hub", NAME),
    ("benchmarks.neighbours.ratio", 0.0, "benchmarks.neighbours.ratio", POS_FRACTION),
    ("benchmarks.methods.npo.learning_rate", -5e-4, "benchmarks.methods.npo.learning_rate", POS),
    ("benchmarks.methods.ga.batch_size", 0, "benchmarks.methods.ga.batch_size", INT),  # ga: overridden, not shared
    ("calibration.n_trials", 0, "calibration.n_trials", INT),
    ("calibration.target", 0, "calibration.target", POS_FRACTION),
]

# Fields that stay a bare int / float, and why a negative value is legitimate there.
BARE = {
    ("lib.families.memorization.ForgetSetConfig", "margin"):
        "MA must exceed the held-out threshold by this; < 0 admits candidates below it (tests/pipeline_repo.py: -1)",
    ("lib.methods.simnpo.Config", "margin"): "SimNPO's reward margin δ shifts the length-normalised reward, any sign",
    ("lib.methods.neumuter.Config", "init_log_alpha"): "a gate's initial log-odds: < 0 starts the gates mostly closed",
    ("lib.core.calibration.Range", "low"): "a search bound of a method's field: any value that field allows "
                                          "(SimNPO's margin may be negative); the method's Config checks each trial",
    ("lib.core.calibration.Range", "high"): "the other bound, as low",
    ("lib.families.memorized.MemorizedConfig", "thresholds"):
        "a fixed score threshold; one below every score (-1) marks every secret memorized (tests/pipeline_repo.py)",
}


def project() -> dict:
    """The project's params.yaml as plain data (YAML anchors resolved)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def with_value(tmp_path: Path, key: str, value: Any) -> Path:
    """A copy of the project's params.yaml with the value at dotted `key` replaced."""
    raw = project()
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    assert last in node, f"{key} is not a key of params.yaml"
    node[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def method_section(key: str) -> tuple[str, str] | None:
    """(track, method) when `key` lies in a method section (`methods.gare.k` -> ('methods', 'gare'))."""
    for track in TRACK_METHODS:
        if key.startswith(track + "."):
            return track, key[len(track) + 1:].split(".")[0]
    return None


def load_like_the_stage(path: Path, key: str) -> Any:
    """Build the section holding `key` the way the stage that reads it does."""
    params = load_params(path)
    found = method_section(key)
    if found:  # flows/edit.py, causal_unlearn.py, bench_unlearn.py: make_config on the raw section
        track, name = found
        parts = key.split(".")
        category = parts[parts.index("by_category") + 1] if "by_category" in parts else "TEL"
        return make_config(name, params.get(f"{track}.{name}"), category if track == "methods" else None,
                           where=f"{track}.{name}")
    for name in SUITES:  # tasks/bench.py suite_config
        if key.startswith(f"benchmarks.{name}."):
            return params.get(f"benchmarks.{name}", suite(name).Config)
    section = max((s for s in SECTIONS if key == s or key.startswith(s + ".")), key=len)
    return params.get(section, SECTIONS[section])


@pytest.mark.parametrize("key, value, where, allowed", BAD, ids=[f"{k}={v!r}" for k, v, *_ in BAD])
def test_bad_value_stops_the_stage_and_the_check(tmp_path: Path, key: str, value: Any, where: str,
                                                 allowed: str) -> None:
    path = with_value(tmp_path, key, value)
    with pytest.raises(ParamsError) as stage:
        load_like_the_stage(path, key)
    message = str(stage.value)
    assert "\n" not in message
    assert f"{where} = " in message and f"allowed: {allowed}" in message, message
    with pytest.raises(ParamsError) as check:  # python -m flows.check gives the same line
        check_params(str(path))
    assert str(check.value) == message


def test_bad_values_cover_every_section_family() -> None:
    keys = {k.split(".")[0] for k, *_ in BAD}
    assert len(BAD) >= 30 and {"methods", "causal", "benchmarks", "compute", "mlflow", "experiments"} <= keys


# ---------------------------------------------------------------- every schema field declares a range


def leaves(hint: Any) -> list[Any]:
    """The scalar types and dataclasses a field type is made of (through Optional, unions, tuples, lists, dicts)."""
    args = typing.get_args(hint)
    if not args:
        return [hint]
    return [leaf for arg in args if arg is not Ellipsis for leaf in leaves(arg)]


def schemas() -> dict[str, type]:
    """Every dataclass a params section is built into, nested ones included, by qualified name."""
    roots = [s for s in SECTIONS.values()] + [get(m).Config for m in METHODS] + [suite(n).Config for n in SUITES]
    found: dict[str, type] = {}
    todo = [leaf for root in roots for leaf in leaves(root)]
    while todo:
        cls = todo.pop()
        if not dataclasses.is_dataclass(cls) or f"{cls.__module__}.{cls.__qualname__}" in found:
            continue
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo += [leaf for hint in typing.get_type_hints(cls).values() for leaf in leaves(hint)]
    return found


def test_every_number_field_has_a_range_type() -> None:
    found = schemas()
    assert {"lib.core.finetune.TrainConfig", "lib.reports.experiments.NoiseConfig", "lib.bench.suites.RunConfig",
            "lib.methods.snku.Config", "tasks.tracking.MlflowConfig"} <= set(found)
    bare = []
    for name, cls in found.items():
        for field, hint in typing.get_type_hints(cls).items():
            if any(leaf in (int, float) for leaf in leaves(hint)) and (name, field) not in BARE:
                bare.append(f"{name}.{field}: {hint}")
    assert not bare, f"bare int/float fields (use a range type of lib.core.params, or allow-list with a reason): {bare}"
    for (name, field), why in BARE.items():  # the allow-list stays true
        assert float in leaves(typing.get_type_hints(found[name])[field]) and why, (name, field)
    scalars = [key for key, schema in SECTIONS.items() if schema in (int, float, str)]
    assert not scalars, f"scalar sections without a range type: {scalars}"


def test_stages_read_scalar_keys_with_a_range_type() -> None:
    """`params.get("memorized.max_len", int)` would skip the range: flows and tasks name a range type."""
    bare = []
    for folder in ("flows", "tasks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                        and len(node.args) == 2 and isinstance(node.args[1], ast.Name) \
                        and node.args[1].id in ("int", "float", "str"):
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, bare


# ---------------------------------------------------------------- the range types themselves


def test_loaded_values_are_plain_builtins() -> None:
    """Range types only annotate: loaded values are plain int / float / str, so hashes and JSON do not change."""
    params = check_params(str(ROOT / "params.yaml"))

    def plain(value: Any) -> bool:
        if dataclasses.is_dataclass(value):
            return all(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(plain(v) for v in value.values())
        return type(value) not in RANGES

    built = [params.get(key, schema) for key, schema in SECTIONS.items()]
    built += [make_config(m, params.get(f"{track}.{m}"), "TEL" if track == "methods" else None, where=f"{track}.{m}")
              for track in TRACK_METHODS for m in params.get(track)]
    assert all(plain(b) for b in built)
    lr = params.get("finetune", SECTIONS["finetune"]).learning_rate
    assert type(lr) is float and type(params.get("seed", Natural)) is int
    assert type(params.get("causal.model", NonEmpty)) is str


@pytest.mark.parametrize("hint, good, bad", [
    (Count, [1, "7"], [0, -1, 2.5, True]),
    (Natural, [0, 3], [-1, "x"]),
    (Positive, [1e-9, 3, "3e-4"], [0, -1.0, float("inf"), float("nan")]),
    (PositiveFraction, [1.0, 0.5], [0.0, 1.5]),
    (NonEmpty, ["a"], ["", "  ", 3]),
    (Count | None, [None, 2], [0]),
    (tuple[Positive, ...], [(1.0, 2)], [(1.0, 0.0)]),
    (dict[str, Natural], [{"TEL": 0}], [{"TEL": -1}]),
])
def test_range_types_inside_optional_tuples_and_dicts(hint: Any, good: list, bad: list) -> None:
    from lib.core.params import _coerce

    for value in good:
        _coerce(value, hint, "key")
    for value in bad:
        with pytest.raises(ParamsError, match=r"^key(\[\d\]|\.TEL)? = .*"):
            _coerce(value, hint, "key")


def test_configs_built_in_code_are_held_to_the_same_ranges() -> None:
    """check_ranges in __post_init__: a sweep or test cannot build an out-of-range Config either."""
    with pytest.raises(ValueError, match=r"^k=0 invalid; allowed: an integer >= 1$"):
        gare.Config(k=0)
    with pytest.raises(ValueError, match=r"learning_rate='1e-4' is not a float"):  # no string parsing in code
        gare.Config(learning_rate="1e-4")
    with pytest.raises(ValueError, match=r"betas=\(0\.9, 1\.0\) invalid; allowed: two numbers in \[0, 1\)"):
        so_graddiff.Config(betas=(0.9, 1.0))  # a relation the type cannot say stays in __post_init__
    cfg = gare.Config(learning_rate=1)  # an int where a float is declared is still fine, and kept as given
    assert cfg.learning_rate == 1 and check_ranges(cfg) is None
    with pytest.raises(ParamsError, match=r"^causal\.methods\.so_graddiff: betas"):  # build names the section
        build(so_graddiff.Config, {"betas": [0.9, 1.0]}, "causal.methods.so_graddiff")
