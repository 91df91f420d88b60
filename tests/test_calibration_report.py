"""lib.reports.calibration: a row per method at its calibrated point, the nearest trial when not reached, every
trial refused said so; the figure renders."""
from __future__ import annotations

from typing import Any

from lib.reports.calibration import figure, report


def trial(number: int, k: int, ppl: float | None, ratio: float | None, refused: str | None = None) -> dict[str, Any]:
    """One trial as the calibrate stage writes it."""
    return {"number": number, "values": {"k": k, "sigma": 0.125}, "valid_ppl": ppl, "gap_ratio": ratio,
            "refused": refused}


def result(reached: bool, trials: list[dict[str, Any]], best: int | None, frontier: list[int]) -> dict[str, Any]:
    """One category's search."""
    return {"metric": "exposure", "gap_before": 18.0, "valid_ppl_before": 2.65, "retrain_valid_ppl": 2.6,
            "target": 0.1, "reached": reached, "best": None if best is None else trials[best],
            "frontier": frontier, "trials": trials}


RESULTS = {
    "snku": {"method": "snku", "TEL": result(True, [trial(0, 300, 9.5, 0.05), trial(1, 50, 3.0, 0.4)], 0, [0, 1])},
    "depn": {"method": "depn", "TEL": result(False, [trial(0, 400, 4.4, 0.22), trial(1, 9000, None, None, "too many")],
                                           0, [0])},
    "gare": {"method": "gare", "TEL": result(False, [trial(0, 9000, None, None, "too many")], None, [])},
}


def test_rows_say_reached_nearest_or_refused() -> None:
    text = report(RESULTS, ["TEL", "NAME"], "calibration.png")
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| yes | k=300, sigma=0.125 | 2.65 → 9.50 | 0.050 | 2 (0) |" in lines["SNKU"]
    assert "| no (nearest) | k=400, sigma=0.125 | 2.65 → 4.40 | 0.220 | 2 (1) |" in lines["DEPN"]
    assert "| no | every trial refused | - | - | 1 (1) |" in lines["GARE"]
    assert "## TEL" in text and "## NAME" not in text and "at most 0.1 of" in text
    assert [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:] == [
        "| GARE", "| DEPN", "| SNKU"]  # the paper's column order


def test_figure_renders() -> None:
    assert figure(RESULTS, ["TEL", "NAME"]).startswith(b"\x89PNG")


def test_a_benchmark_run_gets_its_own_section_and_panel() -> None:
    """A run's results (key bench:<run>) come after the masked categories and the causal track, titled by run."""
    results = {m: {**rows, "bench:lume": rows["TEL"], "causal": rows["TEL"]} for m, rows in RESULTS.items()}
    text = report(results, ["TEL"], "calibration.png")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## TEL", "## Causal LM (MA of D_f)", "## Benchmark LUME (MA of D_f)"]
    assert "retain pairs (D_r" in text.split("## Benchmark LUME")[1]
    assert figure(results, ["TEL", "causal", "bench:lume"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_method_of_a_crowded_figure_keeps_a_colour_of_its_own() -> None:
    """Up to 10 series take matplotlib's cycle; the 18 methods of presets/all_methods.yaml take 18 distinct colours."""
    from lib.reports.masked import series_color

    assert [series_color(i, 6) for i in range(3)] == ["C0", "C1", "C2"]
    assert len({tuple(series_color(i, 18)) for i in range(18)}) == 18
