"""Results tables and figures for the SNKU-paper comparison (pure: data and polars frames in, text and PNG out).

Usage: `frame = parse_experiments(json_obj)`, then `experiments_markdown(frame, categories, links)` and
`experiment_figures(frame, categories)`; the caller writes the files and picks their paths.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.core.metrics import forget_gap
from lib.methods import METHODS

PRIVACY_LABEL = {"TEL": ("exposure", "Exposure"), "NAME": ("mrr", "MRR"), "RANDOM": ("random_ppl", "Perplexity")}
# a memorized random string should become unlikely, so its perplexity should rise; leakage metrics should fall
HIGHER_IS_BETTER = {"exposure": False, "mrr": False, "random_ppl": True}
METHOD_ORDER = ("ftm", "gare", "depn", "apneap", "snku", "random", "retrain")  # the paper's column order
METHOD_LABEL = {**METHODS, "retrain": "Retrain"}
DIGITS = {"valid_ppl": 2, "exposure": 2, "mrr": 3, "random_ppl": 2, "time_s": 1, "neurons_edited": 0, "forget_gap": 3}
EXPERIMENTS = ("seeds", "budget", "noise", "decay", "scoring", "seesaw")

# SNKU paper, Table 1 (BERT-base). RANDOM has no Valid PPL row: its "Perplexity" row is the privacy metric.
PAPER_TABLE1: dict[str, dict[str, dict[str, float]]] = {
    "TEL": {"valid_ppl": {"ftm": 2.16, "gare": 2.20, "depn": 2.22, "apneap": 2.21, "snku": 2.24},
            "privacy": {"ftm": 15.78, "gare": 15.50, "depn": 15.00, "apneap": 14.60, "snku": 13.94},
            "time_s": {"gare": 794.56, "depn": 2200, "apneap": 2800, "snku": 939.07}},
    "NAME": {"valid_ppl": {"ftm": 2.16, "gare": 3.37, "depn": 3.69, "apneap": 3.20, "snku": 2.58},
             "privacy": {"ftm": 0.51, "gare": 0.35, "depn": 0.34, "apneap": 0.36, "snku": 0.33},
             "time_s": {"gare": 16.40, "depn": 107.64, "apneap": 130, "snku": 46.01}},
    "RANDOM": {"privacy": {"ftm": 4.38, "gare": 5.04, "depn": 6.97, "apneap": 7.20, "snku": 8.81},
               "time_s": {"gare": 13.89, "depn": 5054.1, "apneap": 5800, "snku": 2858.3}},
}
# Values quoted in the text of Sec. 4.1 about Fig 2 (TEL) and Fig 3 (NAME), K from 100 to 1000; the text gives
# only the ends of each curve ("from ... to ..."), read here as K = 100 and K = 1000 unless it names K.
PAPER_BUDGET: dict[str, dict[str, dict[str, dict[float, float]]]] = {
    "TEL": {"snku": {"privacy": {1000: 13.1}, "valid_ppl": {100: 2.19, 1000: 2.30}},
            "depn": {"privacy": {1000: 14.6}, "valid_ppl": {100: 2.18, 1000: 2.26}}},
    "NAME": {"snku": {"privacy": {100: 0.46, 800: 0.34}, "valid_ppl": {100: 2.18, 1000: 2.59}},
             "depn": {"privacy": {100: 0.50, 1000: 0.34}, "valid_ppl": {1000: 3.65}}},
}
# Sec. 4.2.1 on Fig 4: TEL, k=300, alpha=0.99, exposure against sigma.
PAPER_NOISE = {"TEL": {"snku": {"privacy": {0.01: 15.62, 0.10: 15.01, 0.15: 14.34, 0.20: 12.87}}}}
# Sec. 4.2.2 on Fig 5: TEL, k=300, sigma=0.05, exposure against alpha.
PAPER_DECAY = {"TEL": {"snku": {"privacy": {0.995: 15.35, 0.999: 15.20}}}}


@dataclass(frozen=True)
class Ablation:
    """One SNKU hyper-parameter sweep and where the paper reports it."""

    name: str  # the records' `experiment` and the figure stem's prefix
    field: str  # the swept record field
    symbol: str
    xlabel: str
    paper: Mapping[str, Any]
    title: str
    figure: str


ABLATIONS = (
    Ablation("noise", "sigma", "σ", "Noise scale σ", PAPER_NOISE,
             "Noise-scale ablation (paper Sec. 4.2.1, Fig 4)", "Fig 4"),
    Ablation("decay", "alpha", "α", "Decay rate α", PAPER_DECAY,
             "Decay-rate ablation (paper Sec. 4.2.2, Fig 5)", "Fig 5"),
)
BUDGET_TITLE = "Privacy-utility trade-off across neuron budgets (paper Sec. 4.1, Fig 2-3)"

REQUIRED = ("experiment", "method", "category", "seed", "privacy_metric", "valid_ppl", "privacy")
FLOAT_FIELDS = ("sigma", "alpha", "forget_fraction", "valid_ppl", "valid_ppl_before", "privacy", "privacy_before",
                "retrain_privacy", "retrain_valid_ppl", "forget_gap", "time_s", "neurons_edited",
                "kept_privacy", "kept_privacy_before", "retrain_kept_privacy")
RECORD_SCHEMA = {"experiment": pl.String, "method": pl.String, "category": pl.String, "seed": pl.Int64,
                 "k": pl.Int64, "rank_by": pl.String, "privacy_metric": pl.String,
                 **{name: pl.Float64 for name in FLOAT_FIELDS}}
TABLE1_METRICS = ("valid_ppl", "privacy", "time_s", "neurons_edited", "forget_gap")
SEESAW_METRICS = ("kept_privacy_before", "kept_privacy", "retrain_kept_privacy", "privacy", "forget_gap")


# --- per-method table of one pipeline run (metrics/methods/<method>.json) --------------------------------------

def long_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> pl.DataFrame:
    """method -> category -> metrics, flattened to one row per (method, category)."""
    records = [{"method": m, "category": c, **metrics} for m, cats in rows.items() for c, metrics in cats.items()]
    return pl.DataFrame(records)


def _fmt(value: float | None, digits: int = 2) -> str:
    """A table cell."""
    return "-" if value is None else f"{value:.{digits}f}"


def table1_rows(rows: Mapping[str, Mapping[str, Mapping[str, float]]], categories: list[str]) -> list[list[str]]:
    """Rows (category, metric, FTM, method...) as in the paper's Table 1."""
    methods = [m for m in rows if m != "ftm"]  # the `ftm` method is the FTM column itself
    out = []
    for cat in categories:
        present = [m for m in rows if cat in rows[m]]
        if not present:
            continue
        key, label = PRIVACY_LABEL[cat]
        first = rows[present[0]][cat]
        lines = [("Valid PPL", "valid_ppl", 2), (label, key, 3), ("Time (s)", "time_s", 2), ("Neurons", "neurons_edited", 0)]
        if any("forget_gap" in rows[m][cat] for m in present):  # older runs have no retrain baseline
            lines.append(("Forget gap", "forget_gap", 3))
        for name, metric, digits in lines:
            ftm = _ftm_value(rows, cat, first, metric, key)
            cells = [_fmt(rows[m][cat].get(metric), digits) for m in methods if cat in rows[m]]
            out.append([cat, name, _fmt(ftm, digits), *cells])
    return out


def _ftm_value(rows: Mapping[str, Mapping[str, Mapping[str, float]]], category: str, first: Mapping[str, float],
               metric: str, key: str) -> float | None:
    """FTM cell: the metric before any edit, or the `ftm` method's forget gap; no time or neurons, as in the paper."""
    if metric in ("valid_ppl", key):
        return first.get(f"{metric}_before")
    return rows.get("ftm", {}).get(category, {}).get("forget_gap") if metric == "forget_gap" else None


def markdown_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]], categories: list[str]) -> str:
    """The Table 1 analogue as Markdown; FTM is the fine-tuned model before any edit."""
    methods = [method_label(m) for m in rows if m != "ftm"]
    header = ["Privacy Category", "Metric", "FTM", *methods]
    lines = [_row(header), _rule(header)]
    lines += [_row(r) for r in table1_rows(rows, categories)]
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


# --- experiment records ----------------------------------------------------------------------------------------

def parse_experiments(obj: Any) -> pl.DataFrame:
    """experiments.json ({"records": [...]}) -> one typed row per record."""
    if not isinstance(obj, dict) or not isinstance(obj.get("records"), list):
        raise ValueError("experiments JSON must be an object {'records': [record, ...]}")
    return records_frame(obj["records"])


def _check_record(index: int, record: Any) -> None:
    """A record is a mapping with every required field and a known experiment."""
    if not isinstance(record, dict):
        raise ValueError(f"experiments record {index} = {record!r} is not an object")
    missing = [f for f in REQUIRED if record.get(f) is None]
    if missing:
        raise ValueError(f"experiments record {index} lacks {missing[0]!r}; required fields: {list(REQUIRED)}")
    nested = [k for k, v in record.items() if isinstance(v, (dict, list))]
    if nested:
        raise ValueError(f"experiments record {index} field {nested[0]!r} is nested; records must be flat")
    if record["experiment"] not in EXPERIMENTS:
        raise ValueError(f"experiments record {index} has experiment={record['experiment']!r}; "
                         f"allowed: {list(EXPERIMENTS)}")


def records_frame(records: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Records -> frame with the known fields typed (absent ones null) and any extra fields kept after them."""
    for index, record in enumerate(records):
        _check_record(index, record)
    if not records:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    frame = pl.DataFrame(list(records), infer_schema_length=None)
    extra = [c for c in frame.columns if c not in RECORD_SCHEMA]
    typed = [pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in RECORD_SCHEMA.items()]
    return frame.with_columns(typed).select(*RECORD_SCHEMA, *extra)


def summarize(frame: pl.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pl.DataFrame:
    """Mean and sample std (ddof 1, null for one seed) over seeds per group; repeats within a seed count once."""
    per_seed = frame.group_by(*by, "seed").agg(pl.col(m).mean() for m in metrics)
    stats = [e for m in metrics for e in (pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std"))]
    return per_seed.group_by(*by).agg(*stats, pl.col("seed").n_unique().alias("n_seeds")).sort(by, nulls_last=True)


def _experiment(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """The records of one experiment."""
    return frame.filter(pl.col("experiment") == name)


# --- formatting helpers ----------------------------------------------------------------------------------------

def method_label(method: str) -> str:
    """A method's column name as in the paper."""
    return METHOD_LABEL.get(method, method.upper())


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """Distinct methods in the paper's column order; unregistered-in-the-paper ones after, alphabetically."""
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _ordered_categories(categories: Sequence[str], present: Iterable[str]) -> list[str]:
    """Categories with records, in the params order; unexpected ones after."""
    seen = set(present)
    return [c for c in categories if c in seen] + sorted(seen - set(categories))


def _missing(value: float | None) -> bool:
    """Null or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: float | None, digits: int) -> str:
    """A number cell, '-' when missing."""
    return "-" if _missing(value) else f"{value:.{digits}f}"


def _mean_std(mean: float | None, std: float | None, digits: int) -> str:
    """'mean ± std', or the mean alone when there is one seed."""
    return _num(mean, digits) if _missing(std) or _missing(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _paper(value: float | None) -> str:
    """A paper value with the paper's two decimals (whole seconds stay whole), '-' when it has none."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 and float(value).is_integer() else f"{value:.2f}"


def _x(value: float | None) -> str:
    """A swept setting (sigma, alpha, forget fraction), shortest form."""
    return "-" if value is None else f"{value:g}"


def _privacy_digits(category: str) -> int:
    """Digits of the category's privacy metric."""
    return DIGITS[PRIVACY_LABEL[category][0]]


def _row(cells: Sequence[Any]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _rule(header: Sequence[str]) -> str:
    """The Markdown header separator."""
    return "|" + "---|" * len(header)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    return "\n".join([_row(header), _rule(header), *(_row(r) for r in rows)]) + "\n"


# --- Table 1 analogue over seeds -------------------------------------------------------------------------------

def _ftm_gap() -> pl.Expr:
    """lib.core.metrics.forget_gap of the unedited model's score (None without a retrain score)."""
    def gap(row: dict[str, Any]) -> float | None:
        """One row's gap."""
        if row["retrain_privacy"] is None:
            return None
        return forget_gap(row["privacy_metric"], row["privacy_before"], row["retrain_privacy"])
    return pl.struct("privacy_metric", "privacy_before", "retrain_privacy").map_elements(gap, return_dtype=pl.Float64)


def _baseline_rows(seeds: pl.DataFrame) -> pl.DataFrame:
    """FTM (the model before any edit) and Retrain as pseudo-methods, one row per record."""
    null = pl.lit(None, pl.Float64)
    ftm = seeds.select("category", "seed", pl.lit("ftm").alias("method"), pl.col("valid_ppl_before").alias("valid_ppl"),
                       pl.col("privacy_before").alias("privacy"), null.alias("time_s"), null.alias("neurons_edited"),
                       _ftm_gap().alias("forget_gap"))
    retrain = seeds.select("category", "seed", pl.lit("retrain").alias("method"),
                           pl.col("retrain_valid_ppl").alias("valid_ppl"), pl.col("retrain_privacy").alias("privacy"),
                           null.alias("time_s"), null.alias("neurons_edited"), null.alias("forget_gap"))
    return pl.concat([ftm, retrain.filter(pl.col("privacy").is_not_null())])


def table1_summary(seeds: pl.DataFrame) -> pl.DataFrame:
    """Mean and std over seeds of each Table-1 metric per (category, method), FTM and Retrain included."""
    # the `ftm` method's records are the unedited model again: the FTM column comes from every record's "before"
    edited = seeds.filter(pl.col("method") != "ftm")
    methods = edited.select("category", "seed", "method", *(pl.col(m).cast(pl.Float64) for m in TABLE1_METRICS))
    # FTM and Retrain repeat in every method's record of a seed; summarize() counts each seed once
    return summarize(pl.concat([_baseline_rows(seeds), methods]), ["category", "method"], TABLE1_METRICS)


def _table1_category(category: str, stats: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    """One category's five rows: our mean ± std, the paper's BERT-base value in parentheses."""
    names = ("Valid PPL", PRIVACY_LABEL[category][1], "Time (s)", "Neurons", "Forget gap")
    out = []
    for metric, name in zip(TABLE1_METRICS, names):
        digits = _privacy_digits(category) if metric == "privacy" else DIGITS[metric]
        paper = PAPER_TABLE1.get(category, {}).get(metric, {})
        cells = []
        for m in columns:
            row = stats.get(m, {})
            ours = _mean_std(row.get(f"{metric}_mean"), row.get(f"{metric}_std"), digits)
            cells.append(ours if m not in paper else f"{ours} ({_paper(paper[m])})")
        out.append([category, name, *cells])
    return out


def table1_markdown(summary: pl.DataFrame, categories: Sequence[str]) -> str:
    """Table 1 layout: rows category x metric, columns FTM, methods..., Retrain (only those present)."""
    columns = ordered_methods(summary["method"].to_list())
    rows = []
    for cat in _ordered_categories(categories, summary["category"].to_list()):
        stats = {r["method"]: r for r in summary.filter(pl.col("category") == cat).iter_rows(named=True)}
        rows += _table1_category(cat, stats, columns)
    return _table(["Privacy Category", "Metric", *map(method_label, columns)], rows)


def _ranked(methods: Sequence[str], values: Mapping[str, float], higher_is_better: bool) -> list[str]:
    """Best first; ties keep the given (paper column) order."""
    return sorted(methods, key=lambda m: -values[m] if higher_is_better else values[m])


def ordering_sentence(category: str, ours: Mapping[str, float | None], paper: Mapping[str, float],
                      higher_is_better: bool) -> str:
    """Our privacy ordering of the methods both tables report, against the paper's: same, or where it differs."""
    head = f"{category} ({PRIVACY_LABEL[category][1]}, {'higher' if higher_is_better else 'lower'} is better)"
    common = [m for m in ordered_methods(ours) if m in paper and not _missing(ours[m])]
    if len(common) < 2:
        return f"{head}: fewer than two methods in common with the paper's Table 1, no ordering to compare."
    mine, theirs = _ranked(common, ours, higher_is_better), _ranked(common, paper, higher_is_better)
    sep = " > " if higher_is_better else " < "
    if mine == theirs:
        return f"{head}: same ordering as the paper ({sep.join(map(method_label, mine))})."
    moved = [f"{method_label(m)} (ours #{mine.index(m) + 1}, paper #{theirs.index(m) + 1})"
             for m in common if mine.index(m) != theirs.index(m)]
    return (f"{head}: ours {sep.join(map(method_label, mine))}; paper {sep.join(map(method_label, theirs))}; "
            f"differs for {', '.join(moved)}.")


def ordering_sentences(summary: pl.DataFrame, categories: Sequence[str]) -> str:
    """One bullet per category comparing our privacy ordering with the paper's Table 1."""
    lines = []
    for cat in _ordered_categories(categories, summary["category"].to_list()):
        part = summary.filter(pl.col("category") == cat)
        ours = dict(zip(part["method"].to_list(), part["privacy_mean"].to_list()))
        higher = HIGHER_IS_BETTER[PRIVACY_LABEL[cat][0]]
        lines.append("- " + ordering_sentence(cat, ours, PAPER_TABLE1.get(cat, {}).get("privacy", {}), higher))
    return "\n".join(lines) + "\n"


# --- sweeps, ablations, scoring and seesaw tables ---------------------------------------------------------------

def _paper_points(paper: Mapping[str, Mapping[str, Mapping[float, float]]], method: str, metric: str,
                  ) -> Mapping[float, float]:
    """A method's quoted paper points {x: value} for one metric (empty when the paper quotes none)."""
    return paper.get(method, {}).get(metric, {})


def budget_markdown(budget: pl.DataFrame, categories: Sequence[str]) -> str:
    """K sweep: a row per (category, method) and a column per K; cells are mean privacy / mean valid PPL."""
    stats = summarize(budget, ["category", "method", "k"], ["privacy", "valid_ppl"])
    rows: list[tuple[str, str, dict[float, str]]] = []
    for cat in _ordered_categories(categories, stats["category"].to_list()):
        part, digits = stats.filter(pl.col("category") == cat), _privacy_digits(cat)
        for m in ordered_methods(part["method"].to_list()):
            cells = {r["k"]: f"{_num(r['privacy_mean'], digits)} / {_num(r['valid_ppl_mean'], 2)}"
                     for r in part.filter(pl.col("method") == m).iter_rows(named=True)}
            rows.append((cat, method_label(m), cells))
        for m in ordered_methods(PAPER_BUDGET.get(cat, {})):
            privacy, ppl = (_paper_points(PAPER_BUDGET[cat], m, key) for key in ("privacy", "valid_ppl"))
            cells = {k: f"{_paper(privacy.get(k))} / {_paper(ppl.get(k))}" for k in sorted({*privacy, *ppl})}
            rows.append((cat, f"{method_label(m)} (paper)", cells))
    ks = sorted({k for _, _, cells in rows for k in cells if k is not None})
    body = [[cat, name, *(cells.get(k, "-") for k in ks)] for cat, name, cells in rows]
    return _table(["Category", "Method", *(f"K={k:g}" for k in ks)], body)


def _sweep_rows(stats: pl.DataFrame, x: str, paper: Mapping[str, Any]) -> dict[tuple, Mapping[str, Any]]:
    """Our summary rows keyed (category, method, x), plus empty rows for paper points we did not sweep."""
    rows: dict[tuple, Mapping[str, Any]] = {(r["category"], r["method"], r[x]): r for r in stats.iter_rows(named=True)}
    for cat in set(stats["category"].to_list()):
        for m in paper.get(cat, {}):
            for value in _paper_points(paper[cat], m, "privacy"):
                if not any(key[:2] == (cat, m) and _close(key[2], value) for key in rows):
                    rows[(cat, m, value)] = {}
    return rows


def sweep_markdown(frame: pl.DataFrame, ablation: Ablation) -> str:
    """One row per (category, method, swept value): mean ± std privacy and valid PPL, the paper's privacy beside."""
    stats = summarize(frame, ["category", "method", ablation.field], ["privacy", "valid_ppl"])
    rows = _sweep_rows(stats, ablation.field, ablation.paper)
    body = []
    for (cat, m, value), r in sorted(rows.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or 0.0)):
        quoted = _paper_points(ablation.paper.get(cat, {}), m, "privacy")
        ref = next((v for k, v in quoted.items() if _close(k, value)), None)
        body.append([cat, method_label(m), _x(value),
                     _mean_std(r.get("privacy_mean"), r.get("privacy_std"), _privacy_digits(cat)),
                     _mean_std(r.get("valid_ppl_mean"), r.get("valid_ppl_std"), 2), _paper(ref)])
    header = ["Category", "Method", ablation.symbol, "Privacy", "Valid PPL", f"Privacy (paper {ablation.figure})"]
    return _table(header, body)


def _close(a: float | None, b: float | None) -> bool:
    """Sweep values equal up to float noise (0.1 written as 0.10 or computed as 0.30000000000000004)."""
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _rank_order(names: Iterable[str]) -> list[str]:
    """HYB, SUM, AVG first (the paper's order), then any other scoring."""
    present = {n for n in names if n is not None}
    return [n for n in ("hyb", "sum", "avg") if n in present] + sorted(present - {"hyb", "sum", "avg"})


def scoring_markdown(scoring: pl.DataFrame, categories: Sequence[str]) -> str:
    """SNKU's cluster scoring (HYB / SUM / AVG): privacy and valid PPL per category, mean ± std."""
    stats = summarize(scoring, ["category", "rank_by"], ["privacy", "valid_ppl"])
    ranks = _rank_order(stats["rank_by"].to_list())
    body = []
    for cat in _ordered_categories(categories, stats["category"].to_list()):
        by_rank = {r["rank_by"]: r for r in stats.filter(pl.col("category") == cat).iter_rows(named=True)}
        lines = (("privacy", PRIVACY_LABEL[cat][1], _privacy_digits(cat)), ("valid_ppl", "Valid PPL", 2))
        for metric, name, digits in lines:
            body.append([cat, name, *(_mean_std(by_rank.get(n, {}).get(f"{metric}_mean"),
                                                by_rank.get(n, {}).get(f"{metric}_std"), digits) for n in ranks)])
    return _table(["Category", "Metric", *(n.upper() for n in ranks)], body)


def _method_rows(stats: pl.DataFrame, category: str, x: str) -> list[dict[str, Any]]:
    """A category's summary rows in the paper's method order, then by `x`."""
    order = ordered_methods(stats["method"].to_list())
    rows = list(stats.filter(pl.col("category") == category).iter_rows(named=True))
    return sorted(rows, key=lambda r: (order.index(r["method"]), r[x] is None, r[x] or 0.0))


def seesaw_markdown(seesaw: pl.DataFrame, categories: Sequence[str]) -> str:
    """Leakage of the kept (not forgotten) secrets before and after each method, with the forgotten ones' privacy."""
    stats = summarize(seesaw, ["category", "method", "forget_fraction"], SEESAW_METRICS)
    body = []
    for cat in _ordered_categories(categories, stats["category"].to_list()):
        digits = _privacy_digits(cat)
        for r in _method_rows(stats, cat, "forget_fraction"):
            cells = [_num(r[f"{m}_mean"], DIGITS["forget_gap"] if m == "forget_gap" else digits)
                     for m in SEESAW_METRICS]
            body.append([cat, method_label(r["method"]), _x(r["forget_fraction"]), *cells])
    header = ["Category", "Method", "Forget fraction", "Kept before", "Kept after", "Retrain kept",
              "Forgotten after", "Forget gap"]
    return _table(header, body)


# --- figures ---------------------------------------------------------------------------------------------------

def _png(fig: Figure) -> bytes:
    """Render with the Agg canvas directly: no pyplot, no global backend state."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})  # no version stamp in the bytes
    return buffer.getvalue()


def _std(part: pl.DataFrame, metric: str) -> list[float]:
    """Error-bar half-widths; 0 where one seed gives no std."""
    return part[f"{metric}_std"].fill_null(0.0).fill_nan(0.0).to_list()


def line_figure(frame: pl.DataFrame, x: str, xlabel: str, privacy_label: str, title: str,
                paper: Mapping[str, Any] | None = None) -> bytes:
    """Privacy (left) and validation PPL (right) against `x`: a line per method, std bars, paper points as x."""
    stats = summarize(frame.filter(pl.col(x).is_not_null()), ["method", x], ["privacy", "valid_ppl"]).sort(x)
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    methods = ordered_methods(stats["method"].to_list())
    for i, m in enumerate(methods):
        part, color = stats.filter(pl.col("method") == m), series_color(i, len(methods))
        for ax, metric in zip(axes, ("privacy", "valid_ppl")):
            ax.errorbar(part[x].to_list(), part[f"{metric}_mean"].to_list(), yerr=_std(part, metric), marker="o",
                        capsize=3, color=color, label=method_label(m))
            points = _paper_points(paper or {}, m, metric)
            if points:
                ax.scatter(list(points), list(points.values()), marker="x", s=60, color=color,
                           label=f"{method_label(m)} (paper)")
    for ax, ylabel in zip(axes, (privacy_label, "Validation PPL")):
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _png(fig)


def series_color(i: int, n: int) -> Any:
    """The colour of series i of n: matplotlib's 10-colour cycle, or tab20's 20 when there are more (every method's
    line stays distinguishable)."""
    if n <= 10:
        return f"C{i}"
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def _panels(n: int, title: str) -> tuple[Figure, list[Any]]:
    """A figure with `n` side-by-side panels (each category keeps its own scale)."""
    fig = Figure(figsize=(4.5 * max(n, 1), 4), layout="constrained")
    fig.suptitle(title)
    return fig, list(fig.subplots(1, max(n, 1), squeeze=False)[0])


def scoring_figure(scoring: pl.DataFrame, categories: Sequence[str]) -> bytes:
    """Privacy under HYB / SUM / AVG cluster scoring, one panel per category."""
    stats = summarize(scoring, ["category", "rank_by"], ["privacy"])
    cats = _ordered_categories(categories, stats["category"].to_list())
    fig, axes = _panels(len(cats), "SNKU cluster scoring (paper Appendix C)")
    for ax, cat in zip(axes, cats):
        part = stats.filter(pl.col("category") == cat)
        by_rank = {r["rank_by"]: r for r in part.iter_rows(named=True)}
        names = _rank_order(by_rank)
        ax.bar([n.upper() for n in names], [by_rank[n]["privacy_mean"] for n in names], capsize=3,
               yerr=[0.0 if _missing(by_rank[n]["privacy_std"]) else by_rank[n]["privacy_std"] for n in names],
               color=[f"C{i}" for i in range(len(names))])
        ax.set(title=cat, ylabel=PRIVACY_LABEL[cat][1])
    return _png(fig)


def seesaw_figure(seesaw: pl.DataFrame, categories: Sequence[str]) -> bytes:
    """Kept-secret leakage before vs after each method (and forget fraction), one panel per category."""
    stats = summarize(seesaw, ["category", "method", "forget_fraction"],
                      ["kept_privacy_before", "kept_privacy", "retrain_kept_privacy"])
    cats = _ordered_categories(categories, stats["category"].to_list())
    fig, axes = _panels(len(cats), "Seesaw: leakage of the secrets that were not forgotten")
    for ax, cat in zip(axes, cats):
        rows = _method_rows(stats, cat, "forget_fraction")
        xs = range(len(rows))
        for shift, metric, name in ((-0.2, "kept_privacy_before", "before"), (0.2, "kept_privacy", "after")):
            ax.bar([i + shift for i in xs], [r[f"{metric}_mean"] or 0.0 for r in rows], width=0.4, label=name)
        retrain = [(i, r["retrain_kept_privacy_mean"]) for i, r in zip(xs, rows)
                   if not _missing(r["retrain_kept_privacy_mean"])]
        if retrain:  # the reference: what a model retrained without the forgotten secrets leaks about the kept ones
            ax.scatter(*zip(*retrain), marker="_", s=400, color="black", label="retrain", zorder=3)
        labels = [method_label(r["method"]) + ("" if r["forget_fraction"] is None else f"\nf={r['forget_fraction']:g}")
                  for r in rows]
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set(title=cat, ylabel=f"Kept {PRIVACY_LABEL[cat][1]}")
        ax.legend(fontsize=8)
    return _png(fig)


def _sweep_categories(frame: pl.DataFrame) -> list[str]:
    """Categories of an ablation's records; TEL (the paper's) when there are none."""
    return sorted(set(frame["category"].to_list())) or ["TEL"]


def experiment_figures(frame: pl.DataFrame, categories: Sequence[str]) -> dict[str, bytes | None]:
    """Every figure by file stem; None where its experiment has no records (the caller skips it)."""
    figures: dict[str, bytes | None] = {}
    budget = _experiment(frame, "budget")
    for cat in categories:
        part = budget.filter(pl.col("category") == cat)
        figures[f"budget_{cat}"] = line_figure(part, "k", "Edited neurons K", PRIVACY_LABEL[cat][1],
                                               f"Neuron budget, {cat}", PAPER_BUDGET.get(cat)) if part.height else None
    for ab in ABLATIONS:
        records = _experiment(frame, ab.name)
        for cat in _sweep_categories(records):
            part = records.filter(pl.col("category") == cat)
            title = f"{ab.xlabel} ablation, {cat}"
            figures[f"{ab.name}_{cat}"] = line_figure(part, ab.field, ab.xlabel, PRIVACY_LABEL[cat][1], title,
                                                      ab.paper.get(cat)) if part.height else None
    for name, draw in (("scoring", scoring_figure), ("seesaw", seesaw_figure)):
        records = _experiment(frame, name)
        figures[name] = draw(records, categories) if records.height else None
    return figures


# --- the experiments part of results.md -------------------------------------------------------------------------

def _figure_lines(stems: Sequence[str], links: Mapping[str, str]) -> str:
    """Image links for written figures, a note for skipped ones."""
    lines = [f"![{s}]({links[s]})" if s in links else f"_Figure {s} skipped: no records for it._" for s in stems]
    return "\n\n".join(lines) + "\n"


def _section(title: str, records: pl.DataFrame, name: str, body: Callable[[pl.DataFrame], str],
             stems: Sequence[str], links: Mapping[str, str]) -> str:
    """A titled table with its figures, or a note that the experiment has no records."""
    if records.height == 0:
        return f"## {title}\n\n_No `{name}` records in the experiments: table and figure skipped._\n"
    return f"## {title}\n\n{body(records)}\n{_figure_lines(stems, links)}"


def seeds_markdown(seeds: pl.DataFrame, categories: Sequence[str]) -> str:
    """The Table 1 analogue over seeds with the ordering sentences."""
    if seeds.height == 0:
        return "## Table 1 analogue\n\n_No `seeds` records in the experiments: table skipped._\n"
    summary = table1_summary(seeds)
    n = seeds["seed"].n_unique()
    note = ("Ours: mean ± std (sample std) over seeds; the paper's BERT-base value (Table 1) in parentheses. "
            "FTM is the fine-tuned model before any edit; Forget gap = |privacy - Retrain privacy|.\n\n")
    return (f"## Table 1 analogue (mean ± std over {n} seeds)\n\n{note}{table1_markdown(summary, categories)}\n"
            f"Privacy ordering against the paper:\n\n{ordering_sentences(summary, categories)}")


def _budget_body(budget: pl.DataFrame, categories: Sequence[str]) -> str:
    """The K-sweep table with its cell legend."""
    return "Cells: mean privacy / mean valid PPL over seeds.\n\n" + budget_markdown(budget, categories)


def experiments_markdown(frame: pl.DataFrame, categories: Sequence[str], links: Mapping[str, str]) -> str:
    """Seeds table, K sweep, ablations, scoring and seesaw sections; `links` maps figure stem -> relative path."""
    sections = [seeds_markdown(_experiment(frame, "seeds"), categories),
                _section(BUDGET_TITLE, _experiment(frame, "budget"), "budget",
                         partial(_budget_body, categories=categories), [f"budget_{c}" for c in categories], links)]
    for ab in ABLATIONS:
        records = _experiment(frame, ab.name)
        sections.append(_section(ab.title, records, ab.name, partial(sweep_markdown, ablation=ab),
                                 [f"{ab.name}_{c}" for c in _sweep_categories(records)], links))
    for name, title, body in (("scoring", "Cluster scoring HYB / SUM / AVG (paper Appendix C)", scoring_markdown),
                              ("seesaw", "Seesaw: leakage of the secrets that were not forgotten", seesaw_markdown)):
        sections.append(_section(title, _experiment(frame, name), name, partial(body, categories=categories),
                                 [name], links))
    legend = ("Privacy: Exposure (TEL) and MRR (NAME), lower is better; Perplexity of the secret (RANDOM), "
              "higher is better.\n\n")
    return legend + "\n".join(sections)


def skipped_markdown(skipped: Sequence[Mapping[str, str]]) -> str:
    """The runs a method rejected (e.g. K above what its selection can supply), with the reason."""
    if not skipped:
        return ""
    lines = [f"- `{s['run']}`: {s['reason']}" for s in skipped]
    return "\n## Runs skipped\n\nThe method rejected these configurations (nothing was edited):\n\n" + \
        "\n".join(lines) + "\n"
