"""Check a whole params.yaml against every section's schema: `python -m flows.check [params.yaml]`.

A stage validates only the sections it reads (before any work); this checks all of them at once, as the
UI does before it starts a run and `flows.preset` before it rewrites params.yaml. One line on stderr and
exit code 2 for the first problem, naming the key, the bad value and what is allowed.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from lib.attacks.audit import AttacksConfig
from lib.core.calibration import CalibrationConfig, check_space
from lib.bench.suites import SUITES, BenchConfig, attack_ready, run_suite, suite
from lib.core.attribution import AttributionConfig
from lib.core.clustering import ClusterConfig
from lib.core.finetune import FinetuneConfig, TrainConfig
from lib.core.ig import IGConfig
from lib.core.models import ComputeConfig
from lib.core.statistics import NeuronsConfig
from lib.core.params import Count, Natural, NonEmpty, Params, ParamsError, load_params
from lib.data.corpus import CorpusConfig
from lib.data.emails import EmailsConfig
from lib.data.neighbours import NeighbourConfig
from lib.data.records import CATEGORIES, PipelineConfig
from lib.families.extraction import CausalEvaluateConfig
from lib.families.masked import EvaluateConfig
from lib.families.masked_retain import RetainConfig
from lib.deletion.service import AUTO, RequestsConfig, requestable
from lib.families.memorization import ForgetSetConfig
from lib.families.memorized import MemorizedConfig
from lib.methods import BY_CATEGORY, METHODS, check_track, get, make_config
from lib.reports.experiments import ExperimentsConfig, check_budget
from tasks.tracking import MlflowConfig

SECTIONS: dict[str, Any] = {
    "seed": Natural, "compute": ComputeConfig, "data": CorpusConfig, "finetune": FinetuneConfig,
    "memorized": MemorizedConfig, "attribution": AttributionConfig, "clustering": ClusterConfig, "ig": IGConfig,
    "evaluate": EvaluateConfig, "pipeline": PipelineConfig, "experiments": ExperimentsConfig, "mlflow": MlflowConfig,
    "causal.model": NonEmpty, "causal.data": EmailsConfig, "causal.finetune": TrainConfig,
    "causal.memorized": ForgetSetConfig, "causal.neighbours": NeighbourConfig, "causal.evaluate": CausalEvaluateConfig,
    "causal.retain_samples": Count, "causal.pipeline": list[str], "benchmarks": BenchConfig,
    "benchmarks.neighbours": NeighbourConfig, "causal.neurons": NeuronsConfig, "benchmarks.neurons": NeuronsConfig,
    "requests": RequestsConfig, "attacks": AttacksConfig,
    "calibration": CalibrationConfig, "retain": RetainConfig, "causal.calibration": CalibrationConfig,
    "benchmarks.calibration": CalibrationConfig,
}
TRACK_METHODS = {"methods": ("pipeline.methods", "masked"), "causal.methods": ("causal.pipeline", "causal"),
                 "benchmarks.methods": ("benchmarks.pipeline", "causal")}


def _known(where: str, keys: Any, allowed: Any) -> None:
    """Every key in `keys` is one of `allowed`."""
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ParamsError(f"unknown key {where}{unknown[0]}; allowed keys: {sorted(allowed)}")


def _methods(params: Params, key: str, categories: tuple[str, ...]) -> None:
    """Every method section of a track builds its Config; its pipeline runs registered methods of its family."""
    sections = params.get(key)
    _known(f"{key}.", sections, METHODS)
    for name, section in sections.items():
        if not categories and isinstance(section, dict) and BY_CATEGORY in section:  # it would be ignored
            raise ParamsError(f"{key}.{name}.{BY_CATEGORY} is set; allowed: {BY_CATEGORY} under methods.<name> only "
                              f"(the masked track's categories)")
        for category in categories or (None,):
            make_config(name, section, category, where=f"{key}.{name}")
    pipeline_key, family = TRACK_METHODS[key]
    for name in params.get(pipeline_key, list[str]):
        if name not in sections:
            raise ParamsError(f"{pipeline_key} contains {name!r}; allowed: methods with a section under {key}: "
                              f"{sorted(sections)}")
        check_track(name, pipeline_key, family)


def check_params(path: str) -> Params:
    """Read params.yaml and build every section with its schema; the first problem raises ParamsError."""
    params = load_params(path)
    _known("", params.raw, {key.split(".")[0] for key in SECTIONS} | {"methods"})
    for key, schema in SECTIONS.items():
        params.get(key, schema)
    _known("causal.", params.raw["causal"], {k.split(".")[1] for k in SECTIONS if k.startswith("causal.")} | {"methods"})
    bench = params.get("benchmarks", BenchConfig)
    for name in SUITES:  # every suite section given, fine-tuned or not: a preset that adds a suite finds it valid
        if name in bench.suites or name in params.raw["benchmarks"]:
            params.get(f"benchmarks.{name}", suite(name).Config)
    params.get("pipeline", PipelineConfig)
    for key in TRACK_METHODS:
        _methods(params, key, CATEGORIES if key == "methods" else ())
    check_budget(params.get("experiments", ExperimentsConfig).budget.methods, params.get("methods"))
    check_requests(params.get("requests", RequestsConfig))
    check_calibration(params.get("calibration", CalibrationConfig), params.get("methods"))
    check_calibration(params.get("causal.calibration", CalibrationConfig), params.get("causal.methods"), "causal.")
    check_calibration(params.get("benchmarks.calibration", CalibrationConfig), params.get("benchmarks.methods"),
                      "benchmarks.")
    for run in bench.attack_runs:
        name = run_suite(run)[0]
        try:
            attack_ready(run, params.get(f"benchmarks.{name}", suite(name).Config))
        except ValueError as err:
            raise ParamsError(f"benchmarks.attack_runs contains {run!r}: {err}") from None
    return params


def check_calibration(cfg: CalibrationConfig, sections: dict[str, Any], track: str = "") -> None:
    """Each calibrated method has a section on its track (`track`: the params prefix), and its space names numeric
    fields of its Config."""
    for name in cfg.methods:
        if name not in sections:
            raise ParamsError(f"{track}calibration.methods contains {name!r}; allowed: methods with a section under "
                              f"{track}methods: {sorted(sections)}")
        check_space(get(name).Config, cfg.spaces[name], f"{track}calibration.spaces.{name}")


def check_requests(cfg: RequestsConfig) -> None:
    """The request policy names `auto` or causal methods that need only the forget and retain sets."""
    for where, name in [("requests.method", cfg.method), *((f"requests.by_category.{c}", m)
                                                          for c, m in cfg.by_category.items())]:
        if name == AUTO:
            continue
        if name not in METHODS:
            raise ParamsError(f"{where} = {name!r} is not a method; allowed: {AUTO}, {', '.join(METHODS)}")
        if not requestable(name, "causal"):
            allowed = [m for m in METHODS if requestable(m, "causal")]
            raise ParamsError(f"{where} = {name!r} cannot serve a request; allowed: {AUTO}, {', '.join(allowed)}")


def cli(argv: list[str], check: Callable[[str], Any] = check_params) -> int:
    """Check the file named on the command line (default params.yaml); 0 when valid, 2 with one line when not."""
    try:
        check(argv[0] if argv else "params.yaml")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("params valid")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
