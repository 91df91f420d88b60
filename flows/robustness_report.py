"""DVC stage `robustness_report`: reports/robustness.md from the attack stages' metrics (lib.reports.robustness)."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows import METRICS, REPORTS, main
from lib.attacks.audit import AttacksConfig
from lib.core.io import read_json, write_text
from lib.core.params import load_params
from lib.reports.robustness import report

TRACKS = {"Causal LM": METRICS / "attacks" / "causal"}


def config(params_file: str) -> dict[str, Any]:
    """The `attacks` section (its tolerance decides the verdicts)."""
    return {"attacks": load_params(params_file).get("attacks", AttacksConfig)}


@flow(name="robustness-report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Write reports/robustness.md."""
    cfg = config(params_file)
    tracks = {title: {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} for title, folder in TRACKS.items()}
    text = report({t: rows for t, rows in tracks.items() if "retrain" in rows}, cfg["attacks"].tolerance)
    write_text(REPORTS / "robustness.md", text)
    return text


if __name__ == "__main__":
    main(report_flow, check=config)
