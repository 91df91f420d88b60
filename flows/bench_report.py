"""DVC stage `bench_report`: reports/bench/results.md and results.csv from metrics/bench/<run>/*.json."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows import BENCH_METRICS, REPORTS, main
from lib.bench.suites import BenchConfig, run_suite, suite
from lib.core.io import read_json, write_text
from lib.core.params import load_params
from lib.reports import bench as report


def runs() -> list[str]:
    """Modules the stage imports by name: the suites of its runs (read by the dvc.yaml deps generator)."""
    return sorted({suite(run_suite(r)[0]).__name__ for r in config("params.yaml").runs})


def config(params_file: str) -> BenchConfig:
    """The stage's params: `benchmarks`."""
    return load_params(params_file).get("benchmarks", BenchConfig)


def _entry(flat: dict[str, float], method: dict[str, Any] | None = None) -> dict[str, Any]:
    """One report row's data: flat scores, plus the method's cost when it is an unlearning run."""
    cost = {"time_s": method["seconds"], "strength": method["strength"], "reached": method["reached"],
            "strength_name": method["strength_name"]} if method else {}
    return {"flat": flat, **cost}


def _section(run: str, methods: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown section and flat rows of one run."""
    scored = suite(run_suite(run)[0])
    original, ref = (read_json(BENCH_METRICS / run / f"{k}.json") for k in ("original", "reference"))
    results = {"original": _entry(scored.flat(original)), "reference": _entry(scored.flat(ref))}
    for name in methods:
        out = read_json(BENCH_METRICS / run / f"{name}.json")
        results[name] = _entry(scored.flat(out["scores"]), out)
    rows = report.rows_of(results)
    table = report.tofu_markdown if run_suite(run)[0] == "tofu" else report.lume_markdown
    limit = read_json(BENCH_METRICS / run / f"{methods[0]}.json")["thresholds"]["ma"] if methods else None
    stop = f"Stop criterion: every D_f sample's teacher-forced accuracy <= {limit:.3f} (the reference model's " \
           f"mean on D_f).\n\n" if limit is not None else ""
    return f"## {run}\n\n{stop}{table(rows, scored.sizes(original))}\n", [{"run": run, **r} for r in rows]


@flow(name="bench-report")
def report_flow(params_file: str = "params.yaml") -> str:
    """One table per benchmark run: the original, the reference and every method."""
    bench = config(params_file)
    sections, rows = [], []
    for run in bench.runs:
        text, part = _section(run, bench.pipeline)
        sections.append(text)
        rows += part
    write_text(REPORTS / "bench" / "results.csv", report.frame(rows).write_csv())
    text = "# Benchmarks: every causal-LM method on TOFU and LUME\n\n" + "\n".join(sections)
    write_text(REPORTS / "bench" / "results.md", text)
    return text


if __name__ == "__main__":
    main(report_flow, check=config)
