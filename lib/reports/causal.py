"""The causal track's comparison table (NeuMuter paper, Table 2 analogue) and MIA distribution figure."""
from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.methods import METHODS

LABELS = {"original": "Original (fine-tuned)", "retrain": "Retrain without D_f", **METHODS,
          "reference": "Reference (without D_f)"}
COLUMNS = ("ma", "el", "span_ma", "span_el", "span_exact", "forgotten_frac", "mia_distance", "ppl_valid",
           "ppl_public", "time_s", "changed_frac", "strength", "reached")
HEADER = ("Model", "MA % ↓", "EL10 % ↓", "secret MA % ↓", "secret EL % ↓", "secret exact % ↓", "forgotten %",
          "MIA dist ↓", "PPL emails ↓", "PPL Shakespeare ↓", "time s", "params changed %", "strength", "stop")


def comparison_frame(results: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    """One row per model: the original and retrained references (from the first result), then each method."""
    if not results:
        raise ValueError("no causal evaluation results to report")
    first = next(iter(results.values()))["models"]
    rows = [{"model": ref, **{k: first[ref].get(k) for k in COLUMNS}} for ref in ("original", "retrain") if ref in first]
    for name, res in results.items():
        cost = {k: res[k] for k in ("time_s", "changed_frac", "strength", "reached")}
        rows.append({"model": name, **{k: res["models"][name].get(k) for k in COLUMNS}, **cost,
                     "strength_name": res["strength_name"]})
    return pl.DataFrame(rows, infer_schema_length=None)


def _cell(column: str, value: Any, row: Mapping[str, Any]) -> str:
    """Format one table cell (percentages for rates, '-' for references' cost)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("ma", "el", "span_ma", "span_el", "span_exact", "forgotten_frac", "changed_frac"):
        return f"{100 * value:.1f}"
    if column == "reached":
        return "reached" if value else "not reached"
    if column == "strength":
        return f"{value:g} {row.get('strength_name') or ''}".strip()
    return f"{value:.1f}" if column == "time_s" else f"{value:.3g}" if column.startswith("ppl") else f"{value:.3f}"


def comparison_markdown(frame: pl.DataFrame) -> str:
    """The comparison as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in frame.iter_rows(named=True):
        cells = [LABELS.get(row["model"], row["model"]), *(_cell(c, row.get(c), row) for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mia_figure(distances: Mapping[str, Sequence[float]]) -> bytes:
    """Loss-based MIA: each model's distribution of |forget loss - mean held-out loss| (paper Fig. 4)."""
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = max((max(v) for v in distances.values() if v), default=1.0)
    for name, values in distances.items():
        ax.hist(values, bins=20, range=(0.0, top), histtype="step", label=LABELS.get(name, name), linewidth=1.5)
    ax.set_xlabel("MIA loss distance to held-out mean (nats/token)")
    ax.set_ylabel("forget samples")
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def example_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The greedy extraction example per model: secret out or not, and which words repeat the true text."""
    first = next(iter(results.values()))["models"]
    models = {k: first[k] for k in ("original", "retrain") if k in first}
    models |= {m: r["models"][m] for m, r in results.items()}
    lines = ["| Model | secret extracted | words matching the true continuation | pattern (= same word, x other) |",
             "|---|---|---|---|"]
    for name, model in models.items():
        ex = model["example"]
        lines.append(f"| {LABELS.get(name, name)} | {'yes' if ex['contains_secret'] else 'no'} | "
                     f"{ex['words_matching']} / {ex['words_generated']} | `{ex['pattern'] or '-'}` |")
    return "\n".join(lines) + "\n"
