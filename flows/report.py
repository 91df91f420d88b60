"""DVC stage `report`: the side-by-side results table (reports/results.md, reports/results.csv)."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.cli import params_path, run_stage
from lib.io import read_json, write_text
from lib.params import load_params
from lib.report import long_table, markdown_table, memorization_table

METRICS = Path("metrics")
OUT = Path("reports")


@flow(name="report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Collect every method's metrics into Markdown and CSV tables."""
    params = load_params(params_file)
    rows = {m: read_json(METRICS / "methods" / f"{m}.json") for m in params.pipeline.methods}
    text = ("## Memorized secrets\n\n" + memorization_table(read_json(METRICS / "memorized.json"))
            + "\n## Unlearning (Table 1 layout)\n\n" + markdown_table(rows, params.pipeline.categories))
    write_text(OUT / "results.md", text)
    write_text(OUT / "results.csv", long_table(rows).write_csv())
    return text


if __name__ == "__main__":
    run_stage(report_flow, params_path())
