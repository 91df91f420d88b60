"""Benchmark tables: TOFU (NeuMuter Table 13 / SIMU Table 1 metrics) and LUME (SIMU Table 2), one row per model."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import polars as pl

from lib.reports.causal import LABELS

TOFU_SETS = (("forget", "Forget"), ("retain", "Retain"), ("real_authors", "Real authors"),
             ("world_facts", "World facts"))
LUME_GROUPS = ("overall", "Task1", "Task2", "Task3")
COST = ("time_s", "strength", "reached")


def _num(value: Any, digits: int = 3) -> str:
    """A number with `digits` significant digits, '-' for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def _count(row: Mapping[str, Any]) -> str:
    """The row's N: forget samples it was scored on (D_f)."""
    n = row.get("n_forget")
    return "-" if n is None else f"{n:.0f}"


def _cost(row: Mapping[str, Any]) -> list[str]:
    """time, strength and stop cells ('-' for the original and reference models)."""
    if row.get("time_s") is None:
        return ["-", "-", "-"]
    strength = f"{row['strength']:g} {row.get('strength_name') or ''}".strip()
    return [f"{row['time_s']:.1f}", strength, "reached" if row["reached"] else "not reached"]


def rows_of(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows: {'model', every flat score, time/strength/stop} in the given order."""
    if not results:
        raise ValueError("no benchmark results to report")
    return [{"model": name, **res["flat"], **{k: res.get(k) for k in (*COST, "strength_name")}}
            for name, res in results.items()]


def frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """The rows as a polars frame (the CSV form of a table)."""
    return pl.DataFrame(list(rows), infer_schema_length=None)


def tofu_markdown(rows: Sequence[Mapping[str, Any]], n: Mapping[str, int]) -> str:
    """TOFU: Prob / ROUGE-L / Truth Ratio per set, forget quality, model utility, cost."""
    sets = " | ".join(f"{label} P / R / TR" for _, label in TOFU_SETS)
    lines = [f"| Model | N forget | {sets} | Forget quality ↑ | Model utility ↑ | time s | strength | stop |",
             "|" + "---|" * (len(TOFU_SETS) + 7)]
    for row in rows:
        cells = [" / ".join(_num(row.get(f"{key}_{m}")) for m in ("prob", "rouge", "truth_ratio"))
                 for key, _ in TOFU_SETS]
        lines.append(f"| {LABELS.get(row['model'], row['model'])} | {_count(row)} | " + " | ".join(cells)
                     + f" | {_num(row.get('forget_quality'))} | {_num(row.get('model_utility'))} | "
                     + " | ".join(_cost(row)) + " |")
    sizes = ", ".join(f"{label} {n.get(key, '?')}" for key, label in TOFU_SETS)
    return "\n".join(lines) + f"\n\nN (QA per set): {sizes}. P = probability, R = ROUGE-L recall, TR = truth-ratio " \
                              "score (forget: mean min(R, 1/R); others: mean max(0, 1 - R)).\n"


def lume_markdown(rows: Sequence[Mapping[str, Any]], n: Mapping[str, int]) -> str:
    """LUME: regurgitation / knowledge per task on forget and retain, MIA AUC, aggregate, cost."""
    groups = " | ".join(f"{side} {g} Reg / Kno" for side in ("Forget", "Retain") for g in LUME_GROUPS)
    lines = [f"| Model | N forget | {groups} | MIA AUC | Aggregate ↑ | time s | strength | stop |",
             "|" + "---|" * (2 * len(LUME_GROUPS) + 7)]
    for row in rows:
        cells = [" / ".join(_num(row.get(f"{side}_{g}_{m}")) for m in ("regurgitation", "knowledge"))
                 for side in ("forget", "retain") for g in LUME_GROUPS]
        lines.append(f"| {LABELS.get(row['model'], row['model'])} | {_count(row)} | " + " | ".join(cells)
                     + f" | {_num(row.get('mia_auc'))} | {_num(row.get('aggregate'))} | " + " | ".join(_cost(row))
                     + " |")
    sizes = ", ".join(f"{k} {v}" for k, v in n.items())
    return "\n".join(lines) + f"\n\nN: {sizes}. Reg = ROUGE-L recall on sentence completions, Kno = exact match on " \
                              "QA; aggregate = mean(1 - forget Reg, 1 - forget Kno, retain Reg, retain Kno, 1 - AUC).\n"
