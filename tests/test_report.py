"""Report tables, figures and the report flow on small synthetic metrics (no Prefect server: `.fn`)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from flows.report import report_flow
from lib.reports.masked import (PAPER_TABLE1, experiment_figures, experiments_markdown, markdown_table,
                                ordering_sentence, parse_experiments, records_frame, table1_markdown, table1_summary)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PRIVACY = {"TEL": "exposure", "NAME": "mrr", "RANDOM": "random_ppl"}
SNKU_TEL = [10.0, 12.0, 17.0]  # per seed: mean 13


def record(experiment: str, method: str, category: str, seed: int, privacy: float, **extra: Any) -> dict[str, Any]:
    """One flat experiments.json record; FTM and Retrain values depend on the seed only, as in a real run."""
    row = {"experiment": experiment, "method": method, "category": category, "seed": seed, "k": None,
           "sigma": None, "alpha": None, "rank_by": None, "forget_fraction": None,
           "privacy_metric": PRIVACY[category], "valid_ppl": 2.0 + 0.1 * seed, "valid_ppl_before": 1.9,
           "privacy": privacy, "privacy_before": 20.0 + seed, "retrain_privacy": 5.0, "retrain_valid_ppl": 1.95,
           "forget_gap": abs(privacy - 5.0), "time_s": 3.0, "neurons_edited": 100.0, "kept_privacy": None,
           "kept_privacy_before": None, "retrain_kept_privacy": None}
    return {**row, **extra}


def seeds_records() -> list[dict[str, Any]]:
    """ftm (no edit), snku, depn and random on TEL over three seeds (snku best, as in the paper)."""
    rows = [record("seeds", "ftm", "TEL", s, 20.0 + s, valid_ppl=1.9, time_s=0.0, neurons_edited=0.0) for s in range(3)]
    rows += [record("seeds", "snku", "TEL", s, p) for s, p in enumerate(SNKU_TEL)]
    rows += [record("seeds", "depn", "TEL", s, 15.0 + s) for s in range(3)]
    rows += [record("seeds", "random", "TEL", s, 19.0) for s in range(3)]
    return rows


def all_records() -> list[dict[str, Any]]:
    """Every experiment kind, small."""
    rows = seeds_records()
    rows += [record("budget", m, "TEL", 0, p - k / 100, k=k) for m, p in (("snku", 14.0), ("depn", 16.0))
             for k in (100, 300)]
    rows += [record("noise", "snku", "TEL", 0, 15.0 - 10 * s, k=300, alpha=0.99, sigma=s) for s in (0.05, 0.15)]
    rows += [record("decay", "snku", "TEL", 0, 15.0 - a, k=300, sigma=0.05, alpha=a) for a in (0.99, 0.999)]
    rows += [record("scoring", "snku", "TEL", 0, p, rank_by=r)
             for r, p in (("hyb", 12.0), ("sum", 13.0), ("avg", 14.0))]
    rows += [record("seesaw", m, "TEL", 0, 6.0, forget_fraction=0.5, kept_privacy_before=18.0, kept_privacy=kp,
                    retrain_kept_privacy=17.5) for m, kp in (("snku", 16.0), ("random", 17.9))]
    return rows


def test_table1_mean_and_std_over_seeds() -> None:
    summary = table1_summary(records_frame(seeds_records()))
    def row(method: str) -> dict[str, Any]:
        return summary.filter((pl.col("method") == method) & (pl.col("category") == "TEL")).row(0, named=True)

    assert row("snku")["privacy_mean"] == pytest.approx(13.0)
    assert row("snku")["privacy_std"] == pytest.approx(statistics.stdev(SNKU_TEL))
    assert row("snku")["valid_ppl_std"] == pytest.approx(statistics.stdev([2.0, 2.1, 2.2]))
    # FTM repeats in every method's record of a seed: each seed must count once (std of 20, 21, 22 is 1)
    assert row("ftm")["privacy_mean"] == pytest.approx(21.0) and row("ftm")["privacy_std"] == pytest.approx(1.0)
    assert row("ftm")["forget_gap_mean"] == pytest.approx(16.0)
    assert row("retrain")["privacy_mean"] == pytest.approx(5.0) and row("retrain")["n_seeds"] == 3


def test_table1_markdown_layout_and_paper_numbers() -> None:
    text = table1_markdown(table1_summary(records_frame(seeds_records())), ["TEL", "NAME"])
    header = text.splitlines()[0]
    assert header == "| Privacy Category | Metric | FTM | DEPN | SNKU | Random-K | Retrain |"
    snku_cell = f"13.00 ± {statistics.stdev(SNKU_TEL):.2f} ({PAPER_TABLE1['TEL']['privacy']['snku']:g})"
    assert snku_cell in text
    assert [line.split(" | ")[1] for line in text.splitlines()[2:]] == \
        ["Valid PPL", "Exposure", "Time (s)", "Neurons", "Forget gap"]


def test_ordering_sentence_same_order() -> None:
    ours = {"ftm": 20.0, "depn": 15.5, "snku": 13.0, "random": 19.0}
    text = ordering_sentence("TEL", ours, PAPER_TABLE1["TEL"]["privacy"], higher_is_better=False)
    assert "same ordering" in text and "SNKU < DEPN < FTM" in text and "Random-K" not in text


def test_ordering_sentence_lists_where_order_differs() -> None:
    ours = {"ftm": 4.0, "gare": 9.0, "depn": 6.0, "snku": 8.0}  # higher is better: GARE first here, last in the paper
    text = ordering_sentence("RANDOM", ours, PAPER_TABLE1["RANDOM"]["privacy"], higher_is_better=True)
    assert "same ordering" not in text
    assert "ours GARE > SNKU > DEPN > FTM" in text and "paper SNKU > DEPN > GARE > FTM" in text
    moved = text.split("differs for ")[1]
    assert "GARE (ours #1, paper #3)" in moved and "SNKU (ours #2, paper #1)" in moved and "FTM" not in moved


def test_ordering_sentence_needs_two_common_methods() -> None:
    text = ordering_sentence("NAME", {"snku": 0.3, "random": 0.5}, PAPER_TABLE1["NAME"]["privacy"], False)
    assert "no ordering to compare" in text


def test_figures_are_png() -> None:
    figures = experiment_figures(records_frame(all_records()), ["TEL", "NAME"])
    written = {stem for stem, png in figures.items() if png is not None}
    assert written == {"budget_TEL", "noise_TEL", "decay_TEL", "scoring", "seesaw"}
    assert figures["budget_NAME"] is None
    assert all(figures[stem].startswith(PNG_MAGIC) for stem in written)


def test_missing_experiments_are_skipped_with_a_note() -> None:
    frame = records_frame(seeds_records())
    figures = experiment_figures(frame, ["TEL"])
    assert all(png is None for png in figures.values())
    text = experiments_markdown(frame, ["TEL"], links={})
    for name in ("budget", "noise", "decay", "scoring", "seesaw"):
        assert f"_No `{name}` records in the experiments: table and figure skipped._" in text
    assert "Table 1 analogue (mean ± std over 3 seeds)" in text and "![" not in text


def test_experiment_tables_carry_paper_points_and_links() -> None:
    frame = records_frame(all_records())
    links = {"budget_TEL": "figures/budget_TEL.png", "noise_TEL": "figures/noise_TEL.png"}
    text = experiments_markdown(frame, ["TEL"], links)
    assert "![budget_TEL](figures/budget_TEL.png)" in text and "_Figure decay_TEL skipped" in text
    assert "| TEL | SNKU (paper) |" in text and "| K=1000 |" in text  # Fig 2's K=1000 point beside ours
    assert "| TEL | SNKU | 0.2 | - | - | 12.87 |" in text  # a paper sigma we did not sweep
    assert "| TEL | SNKU | 0.15 | 13.50 | 2.00 | 14.34 |" in text
    assert "| TEL | Exposure | 12.00 | 13.00 | 14.00 |" in text  # HYB SUM AVG
    assert "| TEL | SNKU | 0.5 | 18.00 | 16.00 | 17.50 | 6.00 | 1.000 |" in text


def test_parse_experiments_names_the_bad_record() -> None:
    with pytest.raises(ValueError, match="record 1 lacks 'privacy'"):
        parse_experiments({"records": [record("seeds", "snku", "TEL", 0, 1.0), {"experiment": "seeds",
                          "method": "snku", "category": "TEL", "seed": 0, "privacy_metric": "exposure",
                          "valid_ppl": 2.0}]})
    with pytest.raises(ValueError, match="experiment='bogus'"):
        parse_experiments({"records": [record("bogus", "snku", "TEL", 0, 1.0)]})
    with pytest.raises(ValueError, match="'k' is nested"):
        parse_experiments({"records": [record("budget", "snku", "TEL", 0, 1.0, k=[100])]})
    with pytest.raises(ValueError, match="records"):
        parse_experiments([])


def test_per_method_table_keeps_its_layout() -> None:
    ftm = {"TEL": {"valid_ppl_before": 2.0, "valid_ppl": 2.0, "exposure_before": 20.0, "exposure": 20.0,
                   "time_s": 0.0, "neurons_edited": 0.0, "forget_gap": 15.0}}
    snku = {"TEL": {"valid_ppl_before": 2.0, "valid_ppl": 2.5, "exposure_before": 20.0, "exposure": 10.0,
                    "time_s": 1.0, "neurons_edited": 100.0, "forget_gap": 5.0}}
    text = markdown_table({"snku": snku}, ["TEL", "NAME"])
    assert "| TEL | Exposure | 20.000 | 10.000 |" in text and "| TEL | Forget gap | - | 5.000 |" in text
    text = markdown_table({"ftm": ftm, "snku": snku}, ["TEL"])  # the ftm method fills the FTM column, no twin
    assert text.splitlines()[0] == "| Privacy Category | Metric | FTM | SNKU |"
    assert "| TEL | Forget gap | 15.000 | 5.000 |" in text and "| TEL | Time (s) | - | 1.00 |" in text


# --- the flow ----------------------------------------------------------------------------------------------------

def memorized_summary(category: str) -> dict[str, Any]:
    """The memorized.json entry memorization_table reads."""
    scores = {"p50": 1.0}
    return {"n_secrets": 3, "n_memorized": 2, "threshold": 1.0, "control_pass_rate": 0.05,
            "secret_scores": scores, "control_scores": scores}


def method_metrics(privacy: float) -> dict[str, Any]:
    """metrics/methods/<method>.json for TEL."""
    return {"TEL": {"valid_ppl_before": 2.0, "valid_ppl": 2.2, "privacy_before": 20.0, "privacy": privacy,
                    "exposure_before": 20.0, "exposure": privacy, "time_s": 1.0, "neurons_edited": 100.0,
                    "weights_edited_frac": 0.001, "n_memorized": 2.0, "retrain_privacy": 5.0,
                    "retrain_valid_ppl": 2.0, "forget_gap": abs(privacy - 5.0)}}


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with params.yaml and the pipeline's metrics for ftm, snku and random."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["pipeline"] = {"methods": ["ftm", "snku", "random"], "categories": ["TEL", "NAME"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics/methods").mkdir(parents=True)
    (tmp_path / "metrics/memorized.json").write_text(json.dumps({"TEL": memorized_summary("TEL")}))
    for method, privacy in (("ftm", 20.0), ("snku", 10.0), ("random", 19.0)):
        (tmp_path / f"metrics/methods/{method}.json").write_text(json.dumps(method_metrics(privacy)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_flow_writes_every_output(run_dir: Path) -> None:
    (run_dir / "metrics/experiments.json").write_text(json.dumps({"records": all_records()}))
    stale = run_dir / "reports/figures/budget_NAME.png"  # from an older run that swept NAME
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_MAGIC)
    text = report_flow.fn("params.yaml")
    reports = run_dir / "reports"
    assert (reports / "results.md").read_text() == text
    assert pl.read_csv(reports / "results.csv").height == 3
    assert pl.read_csv(reports / "experiments.csv").height == len(all_records())
    for stem in ("budget_TEL", "noise_TEL", "decay_TEL", "scoring", "seesaw"):
        assert (reports / "figures" / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
        assert f"](figures/{stem}.png)" in text
    assert not stale.exists() and "_Figure budget_NAME skipped" in text
    assert "## Memorized secrets" in text and "same ordering as the paper" in text
    assert not list(reports.rglob(".*"))  # no temporary files left behind


def test_flow_without_experiments_writes_the_per_method_table_only(run_dir: Path) -> None:
    text = report_flow.fn("params.yaml")
    reports = run_dir / "reports"
    assert sorted(p.name for p in reports.iterdir()) == ["results.csv", "results.md"]
    assert "| TEL | Exposure | 20.000 | 10.000 | 19.000 |" in text
    assert "No metrics/experiments.json" in text and "Table 1 analogue (mean" not in text


def test_skipped_runs_are_listed_with_their_reason() -> None:
    from lib.reports.masked import skipped_markdown

    assert skipped_markdown([]) == ""
    text = skipped_markdown([{"run": "budget-snku-TEL-s0-k=500", "reason": "ValueError: k=500 exceeds the 362"}])
    assert "## Runs skipped" in text and "`budget-snku-TEL-s0-k=500`: ValueError: k=500 exceeds the 362" in text
