"""The causal comparison table (references first, then methods) and the MIA distance figure."""
from __future__ import annotations

import pytest

from lib.reports.causal import COLUMNS, HEADER, comparison_frame, comparison_markdown, mia_figure

METRICS = ("ma", "el", "span_ma", "span_el", "span_exact", "forgotten_frac", "mia_distance", "ppl_valid", "ppl_public")


def model_row(base: float) -> dict:
    """One model's metrics as causal_evaluate writes them (plus a list the table ignores)."""
    row = {k: base for k in METRICS}
    row.update(ppl_valid=20 + base, ppl_public=100 + base, mia_distances=[base, 2 * base])
    return row


def result(method: str, base: float, reached: bool, strength: float, strength_name: str) -> dict:
    """A metrics/causal/<method>.json document."""
    return {"method": method, "strength_name": strength_name, "time_s": 12.34, "changed_frac": 0.25,
            "strength": strength, "reached": reached,
            "models": {"original": model_row(0.5), "retrain": model_row(0.1), method: model_row(base)}}


@pytest.fixture()
def results() -> dict:
    """Two methods; the second has a NaN and a missing metric."""
    ga = result("ga", 0.02, False, 100.0, "steps")
    ga["models"]["ga"]["ppl_public"] = float("nan")
    del ga["models"]["ga"]["span_exact"]
    return {"neumuter": result("neumuter", 0.0, True, 15.0, "passes"), "ga": ga}


def test_frame_rows_and_values(results) -> None:
    frame = comparison_frame(results)
    assert frame["model"].to_list() == ["original", "retrain", "neumuter", "ga"]
    assert set(COLUMNS) <= set(frame.columns)
    assert frame["ma"].to_list() == [0.5, 0.1, 0.0, 0.02]
    assert frame["time_s"].to_list() == [None, None, 12.34, 12.34]
    assert frame["reached"].to_list() == [None, None, True, False]
    assert frame["strength_name"].to_list() == [None, None, "passes", "steps"]
    assert frame["span_exact"].to_list()[3] is None
    assert "mia_distances" not in frame.columns


def test_frame_without_retrain_and_empty() -> None:
    res = result("ta", 0.3, True, 4.0, "tau")
    del res["models"]["retrain"]
    assert comparison_frame({"ta": res})["model"].to_list() == ["original", "ta"]
    with pytest.raises(ValueError, match="no causal evaluation results"):
        comparison_frame({})


def cells(markdown: str) -> dict[str, list[str]]:
    """Markdown rows keyed by their first cell."""
    rows = [line.strip("|").split(" | ") for line in markdown.strip().splitlines()[2:]]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_markdown_formats_cells(results) -> None:
    text = comparison_markdown(comparison_frame(results))
    lines = text.strip().splitlines()
    assert lines[0] == "| " + " | ".join(HEADER) + " |" and len(lines) == 2 + 4
    table = cells(text)
    assert list(table) == ["Original (fine-tuned)", "Retrain without D_f", "NeuMuter", "GA"]
    col = {name: i for i, name in enumerate(COLUMNS)}
    orig, neu, ga = table["Original (fine-tuned)"], table["NeuMuter"], table["GA"]
    assert orig[col["ma"]] == "50.0" and table["Retrain without D_f"][col["el"]] == "10.0"
    assert orig[col["mia_distance"]] == "0.500" and orig[col["ppl_valid"]] == "20.5"
    assert [orig[col[k]] for k in ("time_s", "changed_frac", "strength", "reached")] == ["-"] * 4
    assert neu[col["reached"]] == "reached" and ga[col["reached"]] == "not reached"
    assert neu[col["strength"]] == "15 passes" and ga[col["strength"]] == "100 steps"
    assert neu[col["changed_frac"]] == "25.0" and neu[col["time_s"]] == "12.3"
    assert ga[col["ma"]] == "2.0" and ga[col["ppl_public"]] == "-" and ga[col["span_exact"]] == "-"
    assert all(len(row) == len(COLUMNS) for row in table.values())


def test_markdown_unknown_method_uses_its_key() -> None:
    text = comparison_markdown(comparison_frame({"mine": result("mine", 0.2, True, 1.0, "")}))
    row = cells(text)["mine"]
    assert row[COLUMNS.index("strength")] == "1"


def test_markdown_reached_as_written_by_evaluate() -> None:
    """causal_evaluate stores reached as 1.0 / 0.0."""
    frame = comparison_frame({"ga": result("ga", 0.2, 0.0, 3.0, "steps"), "di": result("di", 0.1, 1.0, 8.0, "x")})
    table = cells(comparison_markdown(frame))
    assert table["GA"][COLUMNS.index("reached")] == "not reached"
    assert table["DI"][COLUMNS.index("reached")] == "reached"


def test_mia_figure_is_png() -> None:
    png = mia_figure({"original": [0.1, 0.5, 0.9], "retrain": [0.2, 0.3], "neumuter": [1.5, 2.0, 2.5]})
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert mia_figure({"original": [0.1, 0.5, 0.9], "retrain": [0.2, 0.3], "neumuter": [1.5, 2.0, 2.5]}) == png


def test_mia_figure_tolerates_empty_and_zero_series() -> None:
    assert mia_figure({"original": [], "ga": []}).startswith(b"\x89PNG")
    assert mia_figure({"original": [0.0, 0.0]}).startswith(b"\x89PNG")
