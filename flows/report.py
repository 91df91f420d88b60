"""DVC stage `report`: the SNKU-paper comparison (reports/results.md, results.csv, experiments.csv, figures/)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from prefect import flow

from flows import MASKED_METRICS, REPORTS, main
from lib.core.io import atomic_path, read_json, write_text
from lib.core.params import load_params
from lib.data.records import PipelineConfig
from lib.reports.masked import (experiment_figures, experiments_markdown, long_table, markdown_table,
                                memorization_table, parse_experiments, skipped_markdown)

FIGURES = REPORTS / "figures"


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
    path = MASKED_METRICS["experiments"]
    if not path.is_file():
        return f"\n_No {path}: seeds, sweeps, ablations and their figures skipped._\n"
    raw = read_json(path)
    frame = parse_experiments(raw)
    write_text(REPORTS / "experiments.csv", frame.write_csv())
    links = write_figures(experiment_figures(frame, categories))
    return "\n" + experiments_markdown(frame, categories, links) + skipped_markdown(raw.get("skipped", []))


def config(params_file: str) -> PipelineConfig:
    """The stage's params: section `pipeline`."""
    return load_params(params_file).get("pipeline", PipelineConfig)


@flow(name="report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Collect every method's metrics and the experiments into Markdown, CSV tables and figures."""
    pipeline = config(params_file)
    categories = list(pipeline.categories)
    rows = {m: read_json(MASKED_METRICS["methods"] / f"{m}.json") for m in pipeline.methods}
    text = ("## Memorized secrets\n\n" + memorization_table(read_json(MASKED_METRICS["memorized"]))
            + "\n## Unlearning (Table 1 layout, this pipeline run)\n\n" + markdown_table(rows, categories))
    write_text(REPORTS / "results.csv", long_table(rows).write_csv())
    text += experiments_report(categories)
    write_text(REPORTS / "results.md", text)
    return text


if __name__ == "__main__":
    main(report_flow, check=config)
