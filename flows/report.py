"""DVC stage `report`: the SNKU-paper comparison (reports/results.md, results.csv, experiments.csv, figures/)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from prefect import flow

from flows.cli import params_path, run_stage
from lib.io import atomic_path, read_json, write_text
from lib.params import load_params
from lib.report import experiment_figures, experiments_markdown, long_table, markdown_table, memorization_table, \
    parse_experiments, skipped_markdown

METRICS = Path("metrics")
OUT = Path("reports")
FIGURES = OUT / "figures"


def write_png(path: Path, data: bytes) -> None:
    """Write PNG bytes atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)


def write_figures(figures: Mapping[str, bytes | None]) -> dict[str, str]:
    """Write each rendered figure; stem -> link relative to results.md for those written."""
    links = {}
    for stem, png in figures.items():
        path = FIGURES / f"{stem}.png"
        if png is None:
            path.unlink(missing_ok=True)  # a figure of an older run must not outlive its records
            continue
        write_png(path, png)
        links[stem] = f"figures/{stem}.png"
    return links


def experiments_report(categories: Sequence[str]) -> str:
    """Experiment tables, figures and experiments.csv; only a note when an older run has no experiments file."""
    path = METRICS / "experiments.json"
    if not path.is_file():
        return f"\n_No {path}: seeds, sweeps, ablations and their figures skipped._\n"
    raw = read_json(path)
    frame = parse_experiments(raw)
    write_text(OUT / "experiments.csv", frame.write_csv())
    links = write_figures(experiment_figures(frame, categories))
    return "\n" + experiments_markdown(frame, categories, links) + skipped_markdown(raw.get("skipped", []))


@flow(name="report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Collect every method's metrics and the experiments into Markdown, CSV tables and figures."""
    params = load_params(params_file)
    categories = params.pipeline.categories
    rows = {m: read_json(METRICS / "methods" / f"{m}.json") for m in params.pipeline.methods}
    text = ("## Memorized secrets\n\n" + memorization_table(read_json(METRICS / "memorized.json"))
            + "\n## Unlearning (Table 1 layout, this pipeline run)\n\n" + markdown_table(rows, categories))
    write_text(OUT / "results.csv", long_table(rows).write_csv())
    text += experiments_report(categories)
    write_text(OUT / "results.md", text)
    return text


if __name__ == "__main__":
    run_stage(report_flow, params_path())
