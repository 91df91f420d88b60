"""reports/calibration.md and its figure: each method at its calibrated point (the least validation perplexity
that reaches the common forget target) and the privacy-utility frontier of every trial (pure: metrics in, text
and PNG out)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from lib.reports.masked import PRIVACY_LABEL, _panels, _png, method_label, ordered_methods, series_color


CAUSAL = "causal"  # the causal track's results, a "category" of their own beside the masked track's
BENCH = "bench:"  # a benchmark run's results: "bench:lume", "bench:tofu_forget01"
TRACK_TITLE = {CAUSAL: "Causal LM (MA of D_f)"}
RUN_TITLE = {"lume": "LUME"}


def bench_key(run: str) -> str:
    """The results key of a benchmark run."""
    return f"{BENCH}{run}"


def title(key: str) -> str:
    """A section's and a panel's title: the causal track, a benchmark run, or the masked category itself."""
    if key.startswith(BENCH):
        run = key.removeprefix(BENCH)
        return f"Benchmark {RUN_TITLE.get(run, run)} (MA of D_f)"
    return TRACK_TITLE.get(key, key)


def _values(values: Mapping[str, Any]) -> str:
    """The calibrated strength, short: k=123, sigma=0.12."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def table(results: Mapping[str, Mapping[str, Any]], category: str) -> str:
    """One category: a row per method with its calibrated point, or the nearest trial when not reached."""
    head = ["Method", "Reached", "Strength at the point", "Valid PPL (before → at point)", "Gap ratio",
            "Trials (refused)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in ordered_methods(m for m in results if category in results[m]):
        row = results[method][category]
        best, trials = row["best"], row["trials"]
        refused = sum(t["refused"] is not None for t in trials)
        if best is None and row.get("reached", False) is None:  # the fine-tuned model was already at the target
            cells = [method_label(method), "-", "nothing to forget", "-", "-", "0"]
        elif best is None:
            cells = [method_label(method), "no", "every trial refused", "-", "-", f"{len(trials)} ({refused})"]
        else:
            cells = [method_label(method), "yes" if row["reached"] else "no (nearest)", _values(best["values"]),
                     f"{row['valid_ppl_before']:.2f} → {best['valid_ppl']:.2f}", f"{best['gap_ratio']:.3f}",
                     f"{len(trials)} ({refused})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(results: Mapping[str, Mapping[str, Any]], categories: Sequence[str]) -> bytes:
    """Gap ratio against validation PPL of every trial, a frontier line per method, the target as a line."""
    cats = [c for c in categories if any(c in r for r in results.values())]
    fig, axes = _panels(len(cats), "Methods at equal forgetting: every calibration trial, and each frontier")
    for ax, cat in zip(axes, cats):
        target = None
        methods = ordered_methods(m for m in results if cat in results[m])
        for i, method in enumerate(methods):
            row, color = results[method][cat], series_color(i, len(methods))
            scored = [t for t in row["trials"] if t["gap_ratio"] is not None]
            by_number = {t["number"]: t for t in scored}
            front = [by_number[n] for n in row["frontier"]]
            ax.scatter([t["gap_ratio"] for t in scored], [t["valid_ppl"] for t in scored], s=14, alpha=0.5,
                       color=color)
            ax.plot([t["gap_ratio"] for t in front], [t["valid_ppl"] for t in front], marker="o", color=color,
                    label=method_label(method))
            target = row["target"]
        if target is not None:
            ax.axvline(target, color="k", linestyle="--", linewidth=1, label="target")
        # log scale: a destroyed model's PPL is many decades up
        ax.set(title=f"{cat} ({PRIVACY_LABEL[cat][1]})" if cat in PRIVACY_LABEL else title(cat),
               xlabel="forget gap / fine-tuned model's gap", ylabel="Validation PPL (log)", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def report(results: Mapping[str, Mapping[str, Any]], categories: Sequence[str], figure_link: str) -> str:
    """The Markdown report: how the points were found, then a table per masked category, one for the causal track
    (results[method]["causal"], when any method has one) and one per benchmark run (results[method]["bench:<run>"])."""
    any_row = next((r[c] for r in results.values() for c in categories if c in r), None)
    target = any_row["target"] if any_row else None
    parts = ["# Methods at equal forgetting\n",
             f"Each method's strength was searched (Optuna TPE, seeded; the space per method in params "
             f"`calibration.spaces`) for the lowest validation perplexity whose forget gap (masked track: the "
             f"privacy score's distance to the retrained model's) is at most {target} of the fine-tuned model's gap. "
             "Gap ratio: "
             "that fraction at the point (0 = the retrained model's score). Not reached: no trial got there within "
             "the budget; the row shows the trial nearest the target. Refused: values the method rejects (e.g. a K "
             f"above the neurons SNKU's clusters hold).\n\n![frontier]({figure_link})\n"]
    for category in categories:
        if any(category in r for r in results.values()):
            parts.append(f"## {category}\n\n{table(results, category)}")
    if any(CAUSAL in r for r in results.values()):
        parts.append(f"## {TRACK_TITLE[CAUSAL]}\n\nThe forget measure is D_f's MA (teacher-forced accuracy, the "
                     "quantity of the Eq. 17 stop rule), its gap the distance to the retrained model's MA; utility is "
                     "the held-out emails' perplexity. A trial runs the method at the searched values without the stop "
                     "rule (params `causal.calibration`).\n\n" + table(results, CAUSAL))
    for key in sorted({k for r in results.values() for k in r if k.startswith(BENCH)}):
        parts.append(f"## {title(key)}\n\nThe forget measure is D_f's MA (the teacher-forced accuracy of its answers), "
                     "its gap the distance to the MA of the run's reference model (trained without D_f); utility is "
                     "the perplexity of the run's retain pairs (D_r, the side the benchmark scores utility on). A trial "
                     "runs the method at the searched values without the stop rule (params "
                     "`benchmarks.calibration`).\n\n" + table(results, key))
    return "\n".join(parts)
