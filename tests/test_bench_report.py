"""Benchmark tables (lib.reports.bench) and each suite's flat scores, reference scores and set sizes (lib.bench.<suite>)."""
from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest

from lib.bench import lume, tofu
from lib.bench.suites import run_suite, suite
from lib.reports import bench as report
from lib.reports.causal import LABELS

TOFU_KEYS = [f"{s}_{m}" for s in tofu.SET_NAMES for m in ("prob", "rouge", "truth_ratio")]
LUME_KEYS = [f"{side}_{g}_{m}" for side in ("forget", "retain") for g in report.LUME_GROUPS
             for m in ("regurgitation", "knowledge")]


def columns(line: str) -> int:
    """Cells of one markdown table line."""
    return line.count("|") - 1


def table_lines(text: str) -> list[str]:
    """The table's lines (header, separator, rows)."""
    return [line for line in text.splitlines() if line.startswith("|")]


def tofu_row(model: str, base: float, **extra: Any) -> dict[str, Any]:
    """A flat TOFU row with distinct values per key."""
    row = {"model": model, **{k: base + i / 100 for i, k in enumerate(TOFU_KEYS)}, "model_utility": 0.4321}
    return row | extra


def lume_row(model: str, **extra: Any) -> dict[str, Any]:
    """A flat LUME row with distinct values per key."""
    row = {"model": model, **{k: 0.1 + i / 100 for i, k in enumerate(LUME_KEYS)}, "mia_auc": 0.61234,
           "aggregate": 0.55555}
    return row | extra


COST = {"time_s": 12.345, "strength": 30.0, "strength_name": "passes", "reached": True}


# ---------------------------------------------------------------- markdown tables

def test_tofu_markdown_cells_and_shape() -> None:
    rows = [tofu_row("original", 0.5, forget_prob=None, retain_rouge=float("nan"), time_s=None),
            tofu_row("reference", 0.2, forget_quality=1.0),
            tofu_row("neumuter", 0.3, forget_quality=0.0123456, **COST),
            tofu_row("my_method", 0.3, **(COST | {"reached": False, "strength": 2.5, "strength_name": None}))]
    text = report.tofu_markdown(rows, {"forget": 4, "retain": 40, "real_authors": 39})
    lines = table_lines(text)
    assert len(lines) == 2 + len(rows)
    header = columns(lines[0])
    assert header == 2 + len(report.TOFU_SETS) + 2 + 3 == 11  # model, N, sets, quality + utility, cost
    assert all(columns(line) == header for line in lines)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    original, reference, neumuter, mine = cells
    assert original[0] == LABELS["original"] and reference[0] == LABELS["reference"]
    assert original[1] == "-"  # no n_forget in these rows
    assert neumuter[0] == "NeuMuter" and mine[0] == "my_method"  # unknown names print as they are
    assert original[2] == "- / 0.51 / 0.52"  # None -> '-'
    assert original[3] == "0.53 / - / 0.55"  # NaN -> '-'
    assert original[6] == "-" and original[7] == "0.432"  # no forget quality; 3 significant digits
    assert original[8:] == ["-", "-", "-"]
    assert reference[6] == "1" and reference[8:] == ["-", "-", "-"]
    assert neumuter[6] == "0.0123" and neumuter[8:] == ["12.3", "30 passes", "reached"]
    assert mine[8:] == ["12.3", "2.5", "not reached"]
    assert "N (QA per set): Forget 4, Retain 40, Real authors 39, World facts ?." in text


def test_lume_markdown_cells_and_shape() -> None:
    rows = [lume_row("original", mia_auc=None, time_s=None),
            lume_row("simu", forget_Task2_knowledge=None, retain_Task3_regurgitation=float("nan"),
                     **(COST | {"strength": 3, "strength_name": "epochs", "reached": False}))]
    n = {"forget members (D_f)": 45, "forget non-members": 5, "retain members": 45}
    text = report.lume_markdown(rows, n)
    lines = table_lines(text)
    assert len(lines) == 4
    header = columns(lines[0])
    assert header == 2 + 2 * len(report.LUME_GROUPS) + 2 + 3 == 15
    assert all(columns(line) == header for line in lines)
    assert "Forget Task2 Reg / Kno" in lines[0] and "Retain overall Reg / Kno" in lines[0]
    original, simu = ([c.strip() for c in line.split("|")[1:-1]] for line in lines[2:])
    assert original[0] == LABELS["original"] and simu[0] == "SIMU"
    assert original[2] == "0.1 / 0.11"  # forget overall reg / kno
    assert original[10] == "-" and original[11] == "0.556" and original[12:] == ["-", "-", "-"]
    assert simu[10] == "0.612"
    assert simu[4] == "0.14 / -"  # forget Task2: knowledge None
    assert simu[9] == "- / 0.25"  # retain Task3: regurgitation NaN
    assert simu[12:] == ["12.3", "3 epochs", "not reached"]
    assert "N: forget members (D_f) 45, forget non-members 5, retain members 45." in text


# ---------------------------------------------------------------- rows_of and frame

def test_rows_of_keeps_order_and_cost() -> None:
    results = {"original": {"flat": {"a": 1.0}},
               "reference": {"flat": {"a": 2.0}},
               "ga": {"flat": {"a": 3.0, "b": 0.5}, "time_s": 1.5, "strength": 4, "reached": False,
                      "strength_name": "steps"}}
    rows = report.rows_of(results)
    assert [r["model"] for r in rows] == ["original", "reference", "ga"]
    assert rows[0] == {"model": "original", "a": 1.0, "time_s": None, "strength": None, "reached": None,
                       "strength_name": None}
    assert rows[2] == {"model": "ga", "a": 3.0, "b": 0.5, "time_s": 1.5, "strength": 4, "reached": False,
                       "strength_name": "steps"}
    with pytest.raises(ValueError, match="no benchmark results"):
        report.rows_of({})


def test_frame_unions_columns_and_keeps_nulls() -> None:
    results = {"original": {"flat": {"a": 1.0}},
               "ga": {"flat": {"a": 3.0, "forget_quality": 0.5}, "time_s": 1.5, "strength": 4.0, "reached": True,
                      "strength_name": "steps"}}
    df = report.frame(report.rows_of(results))
    assert isinstance(df, pl.DataFrame) and df.height == 2
    assert set(df.columns) == {"model", "a", "forget_quality", "time_s", "strength", "reached", "strength_name"}
    assert df["time_s"].to_list() == [None, 1.5]  # the first row's None does not fix the column's type
    assert df["forget_quality"].to_list() == [None, 0.5]
    assert df["reached"].to_list() == [None, True]
    csv = df.write_csv()
    assert csv.splitlines()[0].startswith("model,") and len(csv.splitlines()) == 3


# ---------------------------------------------------------------- each suite's flat, with_reference and sizes

def flat(scores: dict[str, Any], run: str) -> dict[str, float]:
    """The run's scalar scores, through the run's suite module (as flows.bench_report and bench_unlearn do)."""
    return suite(run_suite(run)[0]).flat(scores)


def sizes(scores: dict[str, Any], run: str) -> dict[str, int]:
    """N per evaluation set of the run's suite (the report's caption)."""
    return suite(run_suite(run)[0]).sizes(scores)


def tofu_scores(forget_quality: float | None = None) -> dict[str, Any]:
    """An evaluate_tofu-shaped result (with_forget_quality adds forget_quality when given)."""
    out: dict[str, Any] = {name: {"prob": 0.1 * (i + 1), "rouge": 0.2 * (i + 1), "truth_ratio": 0.05 * (i + 1),
                                  "n": 10 + i} for i, name in enumerate(tofu.SET_NAMES)}
    out["forget_truth_ratios"] = [0.3, 0.5, 0.7]
    out["model_utility"] = tofu.model_utility([out[s][k] for s in tofu.SET_NAMES[1:]
                                               for k in ("prob", "rouge", "truth_ratio")])
    if forget_quality is not None:
        out = tofu.with_forget_quality(out, [0.3, 0.5, 0.7])
    return out


def lume_rows() -> list[dict[str, str]]:
    """Member rows of Task1 / Task2 only (Task3 empty: its means are None)."""
    return [{"id": f"doc{i}{k}{i}", "input": "x", "output": "y", "task": t}
            for i, (k, t) in enumerate([("sc", "Task1"), ("qa", "Task1"), ("sc", "Task2"), ("qa", "Task2")])]


def lume_scores(with_mia: bool = True) -> dict[str, Any]:
    """An evaluate_lume-shaped result built with lume's own summarize / mia_block / aggregate."""
    rows = lume_rows()
    f = lume.summarize(rows, [0.9, 1.0, 0.5, 0.0])
    r = lume.summarize(rows, [0.2, 0.0, 0.4, 1.0])
    mia = lume.mia_block([1.0, 2.0], [1.5, 3.0] if with_mia else [])
    overall = [f["overall"]["regurgitation"]["mean"], f["overall"]["knowledge"]["mean"],
               r["overall"]["regurgitation"]["mean"], r["overall"]["knowledge"]["mean"], mia["auc"]]
    return {"forget": f, "retain": r, "mia": mia, "aggregate": lume.aggregate(*overall),
            "official_task_aggregate": lume.official_task_aggregate(f, r)}


def test_flat_tofu_without_and_with_forget_quality() -> None:
    scores = tofu_scores()
    out = flat(scores, "tofu_forget01")
    assert out == tofu.flat(scores)
    assert set(out) == set(TOFU_KEYS) | {"model_utility", "n_forget"}  # no ratio list, no forget quality
    assert out["n_forget"] == scores["forget"]["n"]
    assert out["retain_rouge"] == pytest.approx(0.4) and out["world_facts_truth_ratio"] == pytest.approx(0.2)
    assert out["model_utility"] == pytest.approx(scores["model_utility"])
    assert all(type(v) is float for v in out.values())
    with_fq = flat(tofu_scores(forget_quality=1.0), "tofu_forget10")
    assert set(with_fq) == set(out) | {"forget_quality"} and with_fq["forget_quality"] == pytest.approx(1.0)


def test_flat_tofu_drops_none() -> None:
    scores = tofu_scores()
    scores["real_authors"]["prob"] = None
    out = flat(scores, "tofu_forget05")
    assert "real_authors_prob" not in out and "real_authors_rouge" in out


def test_flat_lume_drops_none() -> None:
    out = flat(lume_scores(), "lume")
    assert out == lume.flat(lume_scores())
    present = {k for k in LUME_KEYS if "Task3" not in k}
    assert set(out) == present | {"n_forget", "mia_auc", "mia_official", "aggregate"}  # Task3, task aggregate: None
    assert out["n_forget"] == 2.0  # forget members
    assert out["forget_overall_regurgitation"] == pytest.approx(0.7)
    assert out["retain_Task2_knowledge"] == pytest.approx(1.0)
    assert out["mia_auc"] == pytest.approx(0.75) and out["mia_official"] == pytest.approx(0.5)
    assert out["aggregate"] == pytest.approx(((1 - 0.7) + (1 - 0.5) + 0.3 + 0.5 + (1 - 0.75)) / 5)
    assert all(type(v) is float and not math.isnan(v) for v in out.values())
    no_mia = flat(lume_scores(with_mia=False), "lume")
    assert not {"mia_auc", "mia_official", "aggregate"} & set(no_mia)


def test_flat_rejects_unknown_runs() -> None:
    with pytest.raises(ValueError, match="tofu_forget02"):
        flat(tofu_scores(), "tofu_forget02")


def test_with_reference_tofu_adds_forget_quality_and_lume_is_unchanged() -> None:
    scores = tofu_scores()
    same = tofu.with_reference(scores, tofu_scores())  # the reference's own ratios: KS p-value 1
    assert same["forget_quality"] == pytest.approx(1.0)
    assert "forget_quality" not in scores  # a copy, the input is untouched
    far = {"forget_truth_ratios": [5.0 + 0.1 * i for i in range(20)]}
    low = tofu.with_reference({**scores, "forget_truth_ratios": [0.1 + 0.01 * i for i in range(20)]}, far)
    assert low["forget_quality"] < 1e-6
    assert flat(same, "tofu_forget01")["forget_quality"] == pytest.approx(1.0)
    with pytest.raises(KeyError):
        tofu.with_reference(scores, {})
    lume_result = lume_scores()
    assert lume.with_reference(lume_result, lume_scores(with_mia=False)) == lume_result
    assert lume.with_reference(lume_result, {}) is not lume_result


def test_sizes_tofu_and_lume() -> None:
    assert sizes(tofu_scores(), "tofu_forget01") == {"forget": 10, "retain": 11, "real_authors": 12,
                                                     "world_facts": 13}
    assert sizes(lume_scores(), "lume") == {"forget members (D_f)": 2, "forget non-members": 2, "retain members": 4}
    assert sizes(lume_scores(with_mia=False), "lume")["forget non-members"] == 0
