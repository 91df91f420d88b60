"""DVC stage bench_report: reports/bench/results.md and results.csv from metrics/bench/<run>/*.json."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows.bench_bag import METRICS, REPORTS
from flows.bench_eval import flat
from flows.cli import params_path, run_stage
from lib.bench import report
from lib.io import read_json, write_text
from lib.params import load_params, run_suite


def _entry(scores: dict[str, Any], run: str, method: dict[str, Any] | None = None) -> dict[str, Any]:
    """One report row's data: flat scores, plus the method's cost when it is an unlearning run."""
    cost = {"time_s": method["seconds"], "strength": method["strength"], "reached": method["reached"],
            "strength_name": method["strength_name"]} if method else {}
    return {"flat": flat(scores, run), **cost}


def _sizes(scores: dict[str, Any], run: str) -> dict[str, int]:
    """N per evaluation set (TOFU) or members / non-members (LUME)."""
    if run_suite(run)[0] == "tofu":
        return {key: scores[key]["n"] for key, _ in report.TOFU_SETS}
    return {"forget members (D_f)": scores["mia"]["n_members"], "forget non-members": scores["mia"]["n_non_members"],
            "retain members": scores["retain"]["overall"]["regurgitation"]["n"]
            + scores["retain"]["overall"]["knowledge"]["n"]}


def _section(run: str, methods: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown section and flat rows of one run."""
    original, ref = (read_json(METRICS / run / f"{k}.json") for k in ("original", "reference"))
    results = {"original": _entry(original, run), "reference": _entry(ref, run)}
    for name in methods:
        out = read_json(METRICS / run / f"{name}.json")
        results[name] = _entry(out["scores"], run, out)
    rows = report.rows_of(results)
    table = report.tofu_markdown if run_suite(run)[0] == "tofu" else report.lume_markdown
    limit = read_json(METRICS / run / f"{methods[0]}.json")["thresholds"]["ma"] if methods else None
    stop = f"Stop criterion: every D_f sample's teacher-forced accuracy <= {limit:.3f} (the reference model's " \
           f"mean on D_f).\n\n" if limit is not None else ""
    return f"## {run}\n\n{stop}{table(rows, _sizes(original, run))}\n", [{"run": run, **r} for r in rows]


@flow(name="bench-report")
def report_flow(params_file: str = "params.yaml") -> str:
    """One table per benchmark run: the original, the reference and every method."""
    bench = load_params(params_file).benchmarks
    sections, rows = [], []
    for run in bench.runs:
        text, part = _section(run, bench.pipeline)
        sections.append(text)
        rows += part
    write_text(REPORTS / "results.csv", report.frame(rows).write_csv())
    text = "# Benchmarks: every causal-LM method on TOFU and LUME\n\n" + "\n".join(sections)
    write_text(REPORTS / "results.md", text)
    return text


if __name__ == "__main__":
    run_stage(report_flow, params_path())
