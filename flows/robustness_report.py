"""DVC stage `robustness_report`: reports/robustness.md from the attack stages' metrics of the causal and masked
tracks and of the benchmark runs in benchmarks.attack_runs (lib.reports.robustness)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows import METRICS, REPORTS, main
from lib.attacks.audit import AttacksConfig
from lib.bench.suites import BenchConfig
from lib.bench.tofu import FORGET_SPLITS
from lib.core.io import read_json, write_text
from lib.core.params import load_params
from lib.data.records import PipelineConfig
from lib.families.masked import PRIVACY_METRIC
from lib.reports.robustness import report

CAUSAL, MASKED, BENCH = (METRICS / "attacks" / track for track in ("causal", "masked", "bench"))
BENCH_TITLES = {"lume": "LUME", **{f"tofu_{split}": f"TOFU {split}" for split in FORGET_SPLITS}}  # section titles
PRIVACY_NAME = {"exposure": "Exposure", "mrr": "MRR", "random_ppl": "Pseudo-PPL"}


def tracks(causal: list[str], masked_models: list[str], bench: dict[str, list[str]] | None = None
           ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The attacked models of each track and benchmark run (`bench`: run -> methods; files of models no longer in
    the params are left out) with its retrained row: {title: {model: numbers}}, and the masked tables' privacy score
    names (a table per category)."""
    def read(folder: Path, names: list[str]) -> dict[str, Any]:
        """The metrics of the models `names` that were attacked."""
        return {name: read_json(folder / f"{name}.json") for name in names if (folder / f"{name}.json").is_file()}

    out = {"Causal LM": read(CAUSAL, ["original", *causal, "retrain"])}
    masked = read(MASKED, [*masked_models, "retrain"])
    privacy = {}
    for category, metric in PRIVACY_METRIC.items():
        title = f"Masked LM: {category}"
        out[title] = {name: rows[category] for name, rows in masked.items() if category in rows}
        privacy[title] = PRIVACY_NAME[metric]
    for run, methods in (bench or {}).items():
        out[f"Benchmark: {BENCH_TITLES.get(run, run)}"] = read(BENCH / run, ["original", *methods, "retrain"])
    return {title: rows for title, rows in out.items() if "retrain" in rows}, privacy


def config(params_file: str) -> dict[str, Any]:
    """The `attacks` section (its tolerance decides the verdicts), the attacked benchmark runs and the methods of
    every track."""
    params = load_params(params_file)
    return {"attacks": params.get("attacks", AttacksConfig), "causal": params.get("causal.pipeline", list[str]),
            "masked": params.get("pipeline", PipelineConfig).methods,
            "bench": params.get("benchmarks.pipeline", list[str]),
            "bench_runs": params.get("benchmarks", BenchConfig).attack_runs}


@flow(name="robustness-report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Write reports/robustness.md."""
    cfg = config(params_file)
    bench = {run: list(cfg["bench"]) for run in cfg["bench_runs"]}
    rows, privacy = tracks(cfg["causal"], list(cfg["masked"]), bench)
    text = report(rows, cfg["attacks"].tolerance, privacy)
    write_text(REPORTS / "robustness.md", text)
    return text


if __name__ == "__main__":
    main(report_flow, check=config)
