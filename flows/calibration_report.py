"""DVC stage `calibration_report`: reports/calibration.md and reports/calibration.png from the calibrate,
causal_calibrate and bench_calibrate stages' metrics (lib.reports.calibration)."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows import METRICS, REPORTS, main
from lib.bench.suites import BenchConfig
from lib.core.calibration import CalibrationConfig
from lib.core.io import atomic_path, read_json, write_text
from lib.core.params import load_params
from lib.data.records import PipelineConfig
from lib.reports.calibration import CAUSAL, bench_key, figure, report

FIGURE = REPORTS / "calibration.png"


def config(params_file: str) -> dict[str, Any]:
    """The calibrated methods of each track, the categories and the benchmark runs."""
    params = load_params(params_file)
    return {"methods": params.get("calibration", CalibrationConfig).methods,
            "causal_methods": params.get("causal.calibration", CalibrationConfig).methods,
            "bench_methods": params.get("benchmarks.calibration", CalibrationConfig).methods,
            "runs": list(params.get("benchmarks", BenchConfig).runs),
            "categories": params.get("pipeline", PipelineConfig).categories}


@flow(name="calibration-report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Write reports/calibration.md and its figure."""
    cfg = config(params_file)
    results = {m: read_json(METRICS / "calibration" / f"{m}.json") for m in cfg["methods"]}
    for m in cfg["causal_methods"]:  # the causal track's point beside the method's masked categories
        results.setdefault(m, {"method": m})[CAUSAL] = read_json(METRICS / "calibration" / CAUSAL / f"{m}.json")
    for run in cfg["runs"]:  # each benchmark run's point, a column of its own
        for m in cfg["bench_methods"]:
            results.setdefault(m, {"method": m})[bench_key(run)] = read_json(METRICS / "calibration" / "bench" / run
                                                                              / f"{m}.json")
    with atomic_path(FIGURE, suffix=".png") as tmp:
        tmp.write_bytes(figure(results, [*cfg["categories"], CAUSAL, *map(bench_key, cfg["runs"])]))
    text = report(results, cfg["categories"], FIGURE.name)
    write_text(REPORTS / "calibration.md", text)
    return text


if __name__ == "__main__":
    main(report_flow, check=config)
