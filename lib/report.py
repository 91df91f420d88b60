"""Results tables in the layout of the SNKU paper's Table 1 (pure: dicts in, text out)."""
from __future__ import annotations

from typing import Any, Mapping

import polars as pl

PRIVACY_LABEL = {"TEL": ("exposure", "Exposure"), "NAME": ("mrr", "MRR"), "RANDOM": ("random_ppl", "Perplexity")}


def long_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> pl.DataFrame:
    """method -> category -> metrics, flattened to one row per (method, category)."""
    records = [{"method": m, "category": c, **metrics} for m, cats in rows.items() for c, metrics in cats.items()]
    return pl.DataFrame(records)


def _fmt(value: float | None, digits: int = 2) -> str:
    """A table cell."""
    return "-" if value is None else f"{value:.{digits}f}"


def table1_rows(rows: Mapping[str, Mapping[str, Mapping[str, float]]], categories: list[str]) -> list[list[str]]:
    """Rows (category, metric, FTM, method...) as in the paper's Table 1."""
    methods = list(rows)
    out = []
    for cat in categories:
        present = [m for m in methods if cat in rows[m]]
        if not present:
            continue
        key, label = PRIVACY_LABEL[cat]
        first = rows[present[0]][cat]
        lines = [("Valid PPL", "valid_ppl", 2), (label, key, 3), ("Time (s)", "time_s", 2), ("Neurons", "neurons_edited", 0)]
        for name, metric, digits in lines:
            before = first.get(f"{metric}_before") if metric in ("valid_ppl", key) else None
            cells = [_fmt(rows[m][cat].get(metric), digits) for m in methods if cat in rows[m]]
            out.append([cat, name, _fmt(before, digits), *cells])
    return out


def markdown_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]], categories: list[str]) -> str:
    """The Table 1 analogue as Markdown; FTM is the fine-tuned model before any edit."""
    methods = [m.upper() if m != "random" else "Random-K" for m in rows]
    header = ["Privacy Category", "Metric", "FTM", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in table1_rows(rows, categories)]
    return "\n".join(lines) + "\n"


def memorization_table(summary: Mapping[str, Any]) -> str:
    """Memorized counts, thresholds and the controls' pass rate per category."""
    lines = ["| Category | Planted | Memorized | Threshold | Controls passing | Secret median | Control median |",
             "|---|---|---|---|---|---|---|"]
    for cat, rep in summary.items():
        lines.append(f"| {cat} | {rep['n_secrets']} | {rep['n_memorized']} | {rep['threshold']:.3g} | "
                     f"{100 * (rep['control_pass_rate'] or 0):.1f}% | {rep['secret_scores']['p50']:.3g} | "
                     f"{rep['control_scores']['p50']:.3g} |")
    return "\n".join(lines) + "\n"
