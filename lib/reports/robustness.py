"""reports/robustness.md: per track, each model's direct forgetting beside what every attack recovers, and a verdict.

A number counts as recovered when it exceeds the retrained reference's by more than the tolerance (absolute, on
shares and accuracies; PrivLeak is already relative to the reference). The verdict names each attack that
recovers; "holds" when none does, "not forgotten" when the direct score already exceeds the reference's.
"""
from __future__ import annotations

from typing import Any, Mapping

REFERENCE_ROWS = ("original", "retrain")


def relearned(curve: Mapping[str, Mapping[str, float]]) -> tuple[str, Mapping[str, float]]:
    """The attacker's best checkpoint after some training (the highest span MA): (steps, numbers)."""
    trained = {steps: point for steps, point in curve.items() if int(steps) > 0} or curve
    steps = max(trained, key=lambda s: (trained[s]["span_ma"], -int(s)))
    return steps, trained[steps]


def privleak(row: Mapping[str, Any], reference: Mapping[str, Any], kind: str = "auc_loss") -> float:
    """MUSE's PrivLeak of one membership score against the retrained model's AUC."""
    return (row["mia"][kind] - reference["mia"][kind]) / reference["mia"][kind]


def verdict(row: Mapping[str, Any], ref: Mapping[str, Any], tolerance: float, bits: list[str]) -> str:
    """What recovers the forgotten items from this model, in words."""
    def above(value: float, base: float) -> bool:
        return value > base + tolerance

    if above(row["direct"]["span_ma"], ref["direct"]["span_ma"]):
        return "not forgotten"
    found = [f"undone by {b.removeprefix('int')}-bit" for b in bits
             if above(row[b]["span_ma"], ref[b]["span_ma"])]
    top = max(row["sampling"], key=lambda k: int(k.removeprefix("leak@")))
    if above(row["sampling"][top], ref["sampling"][top]):
        found.append(f"leaks when sampled ({top})")
    if above(row["logit_lens"]["best_top1"], ref["logit_lens"]["best_top1"]):
        found.append("readable by logit lens")
    steps, point = relearned(row["relearn"])
    if above(point["span_ma"], relearned(ref["relearn"])[1]["span_ma"]):
        found.append(f"relearned in {steps} steps")
    # the reference-model score (the model's log-likelihood minus the retrained model's) cancels how unlikely the
    # secrets are in themselves: 0.5 = as private as retraining
    if row["mia"]["auc_reference"] > 0.5 + tolerance:
        found.append("membership leaks")
    elif row["mia"]["auc_reference"] < 0.5 - tolerance:
        found.append("over-unlearned (members less likely than under retraining)")
    return "; ".join(found) if found else "holds"


def table(rows: Mapping[str, Mapping[str, Any]], tolerance: float) -> str:
    """One Markdown table: a row per model (original first, retrain last), columns direct, each attack, verdict."""
    ref = rows["retrain"]
    bits = sorted((k for k in ref if k.startswith("int")), key=lambda b: -int(b.removeprefix("int")))
    top = max(ref["sampling"], key=lambda k: int(k.removeprefix("leak@")))
    checkpoints = "/".join(s for s in sorted(ref["relearn"], key=int) if int(s) > 0)
    head = (["Model", "Span MA"] + [f"{b.removeprefix('int')}-bit span MA (edit/step)" for b in bits]
            + ["leak@1", top, "Lens top-1 (output)", f"Relearn {checkpoints} steps: best span MA (NLL)",
               "MIA AUC loss / vs retrain", "PrivLeak", "Verdict"])
    order = ["original", *[m for m in rows if m not in REFERENCE_ROWS], "retrain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in [m for m in order if m in rows]:
        row = rows[name]
        quant = [f"{row[b]['span_ma']:.3f} ({row[b]['median_delta_over_step']:.2g})" if row[b]["changed_weights"]
                 else f"{row[b]['span_ma']:.3f} (-)" for b in bits]  # the fine-tuned model changed nothing
        steps, point = relearned(row["relearn"])
        verdict_text = "reference" if name == "retrain" else (
            "before unlearning" if name == "original" else verdict(row, ref, tolerance, bits))
        cells = [name, f"{row['direct']['span_ma']:.3f}", *quant, f"{row['sampling']['leak@1']:.3f}",
                 f"{row['sampling'][top]:.3f}",
                 f"{row['logit_lens']['best_top1']:.3f} ({row['logit_lens']['final_top1']:.3f})",
                 f"{point['span_ma']:.3f} ({point['nll']:.2f}) at {steps}",
                 f"{row['mia']['auc_loss']:.3f} / {row['mia']['auc_reference']:.3f}", f"{privleak(row, ref):+.2f}",
                 verdict_text]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Seconds each attack took on each model (the stage's own loading and writing not included)."""
    attacks = list(next(iter(rows.values()))["attack_seconds"])
    lines = ["| Model | " + " | ".join(attacks) + " | total |", "|" + "---|" * (len(attacks) + 2)]
    for name, row in rows.items():
        spent = row["attack_seconds"]
        lines.append(f"| {name} | " + " | ".join(f"{spent[a]:.1f}" for a in attacks) + f" | {sum(spent.values()):.1f} |")
    return "\n".join(lines) + "\n"


def report(tracks: Mapping[str, Mapping[str, Mapping[str, Any]]], tolerance: float) -> str:
    """The whole Markdown report: one section per track."""
    parts = ["# Robustness: does the forgetting hold under attack?\n",
             f"A value counts as recovered when it exceeds the retrained reference's by more than {tolerance:g} "
             "(PrivLeak: its magnitude). Span MA: teacher-forced accuracy on the secret spans of D_f. "
             "Edit/step: the median size of the model's changed weights over the rounding step (below 0.5 mostly "
             "rounds back to the fine-tuned weights). Lens: the share of secret tokens that are the top prediction "
             "of some layer (of the output layer). Relearn: the attacker fine-tunes on half of D_f, the other half "
             "is measured; the best checkpoint counts. MIA: AUC of telling D_f from held-out emails by the model's "
             "loss, and by its loss minus the retrained model's (0.5 = as private as retraining; the held-out emails "
             "hold no secret, so the plain loss AUC also measures how unlikely the secrets are in themselves, and "
             "MUSE's PrivLeak, relative to the retrained model's loss AUC, is large when that AUC is small).\n"]
    for track, rows in tracks.items():
        parts.append(f"## {track}\n\n{table(rows, tolerance)}")
        parts.append(f"### {track}: seconds per attack\n\n{cost(rows)}")
    return "\n".join(parts)
