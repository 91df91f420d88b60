"""reports/robustness.md: per track, each model's direct forgetting beside what every attack recovers, and a verdict.

A number counts as recovered when it exceeds the retrained reference's by more than the tolerance (absolute, on
shares and accuracies; PrivLeak is already relative to the reference). The verdict names each attack that
recovers; "holds" when none does, "not forgotten" when the direct score already exceeds the reference's. The same
table serves both families: the extraction attack is sampling (leak@k) on causal LMs and the top-k candidates
(hit@k) on masked LMs, and a masked track's table also shows its category's privacy score.
"""
from __future__ import annotations

from typing import Any, Mapping

BEFORE_ROWS = ("original", "ftm")  # the fine-tuned model before unlearning (the masked track calls it ftm)
REFERENCE_ROWS = (*BEFORE_ROWS, "retrain")
EXTRACTION = {"sampling": "leaks when sampled", "candidates": "in the top-k candidates"}
BENCH_PREFIX = "Benchmark: "  # the sections of benchmark runs
BENCH_NOTE = ("Benchmarks: the secret spans are the answers to D_f's prompts (a LUME document's continuation, a "
              "question's answer), span MA their teacher-forced accuracy; leak@k the share of answers whose first "
              "tokens (as many as a sample holds; a short answer with its end of text) one of k sampled continuations "
              "of the prompt emits; the retrained row is the run's reference model, trained without D_f. The "
              "never-trained texts (the membership non-members, the unrelated-text attacker's data) are LUME's "
              "forget split's held-out rows and, on TOFU, the QA of authors left out of the fine-tuning "
              "(benchmarks.tofu.n_retain_authors); the paraphrase attack asks TOFU's paraphrased questions (LUME asks "
              "nothing twice: none). A method's model is unlearned again by the attack stage (the track keeps no "
              "edited weights).\n")


def extraction(row: Mapping[str, Any]) -> tuple[str, Mapping[str, float]]:
    """The row's extraction attack: (its key, {"leak@k" or "hit@k": share})."""
    key = next(k for k in EXTRACTION if k in row)
    return key, row[key]


def largest_k(shares: Mapping[str, float]) -> str:
    """The key of the most tries (leak@16, hit@8 ...)."""
    return max(shares, key=lambda k: int(k.split("@")[1]))


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
    key, shares = extraction(row)
    top = largest_k(shares)
    if above(shares[top], extraction(ref)[1][top]):
        found.append(f"{EXTRACTION[key]} ({top})")
    if above(row["logit_lens"]["best_top1"], ref["logit_lens"]["best_top1"]):
        found.append("readable by logit lens")
    if "paraphrase" in row and above(row["paraphrase"]["span_ma"], ref["paraphrase"]["span_ma"]):
        found.append("recalled under other prompts")
    if "relearn" in row:
        steps, point = relearned(row["relearn"])
        if above(point["span_ma"], relearned(ref["relearn"])[1]["span_ma"]):
            found.append(f"relearned in {steps} steps")
    if "relearn_unrelated" in row and "relearn_unrelated" in ref:
        steps, point = relearned(row["relearn_unrelated"])
        if above(point["span_ma"], relearned(ref["relearn_unrelated"])[1]["span_ma"]):
            found.append(f"back after {steps} steps on unrelated text")
    # the reference-model score (the model's log-likelihood minus the retrained model's) cancels how unlikely the
    # secrets are in themselves: 0.5 = as private as retraining
    if row["mia"]["auc_reference"] > 0.5 + tolerance:
        found.append("membership leaks")
    elif row["mia"]["auc_reference"] < 0.5 - tolerance:
        found.append("over-unlearned (members less likely than under retraining)")
    return "; ".join(found) if found else "holds"


def _relearn_cell(row: Mapping[str, Any], key: str = "relearn") -> str:
    """The attacker's best checkpoint: span MA (NLL) at steps; '-' when the attack did not run (too little D_f to
    split, no unrelated text)."""
    if key not in row:
        return "-"
    steps, point = relearned(row[key])
    return f"{point['span_ma']:.3f} ({point['nll']:.2f}) at {steps}"


def table(rows: Mapping[str, Mapping[str, Any]], tolerance: float, privacy: str | None = None) -> str:
    """One Markdown table: a row per model (before unlearning first, retrain last), columns direct (and the
    category's `privacy` score when given), each attack, verdict."""
    ref = rows["retrain"]
    bits = sorted((k for k in ref if k.startswith("int")), key=lambda b: -int(b.removeprefix("int")))
    shares = extraction(ref)[1]
    first, top = min(shares, key=lambda k: int(k.split("@")[1])), largest_k(shares)
    checkpoints = "/".join(s for s in sorted(ref.get("relearn", {}), key=int) if int(s) > 0) or "-"
    head = (["Model", "Span MA", *([privacy] if privacy else [])]
            + [f"{b.removeprefix('int')}-bit span MA (edit/step)" for b in bits]
            + [first, top, "Lens top-1 (output)", "Paraphrase span MA", f"Relearn {checkpoints} steps: best span MA (NLL)",
               "Relearn on unrelated text: best span MA (NLL)", "MIA AUC loss / vs retrain", "PrivLeak", "Verdict"])
    order = [*[m for m in BEFORE_ROWS if m in rows], *[m for m in rows if m not in REFERENCE_ROWS], "retrain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        row = rows[name]
        quant = [f"{row[b]['span_ma']:.3f} ({row[b]['median_delta_over_step']:.2g})" if row[b]["changed_weights"]
                 else f"{row[b]['span_ma']:.3f} (-)" for b in bits]  # the fine-tuned model changed nothing
        verdict_text = "reference" if name == "retrain" else (
            "before unlearning" if name in BEFORE_ROWS else verdict(row, ref, tolerance, bits))
        found = extraction(row)[1]
        cells = [name, f"{row['direct']['span_ma']:.3f}", *([f"{row['direct']['privacy']:.3g}"] if privacy else []),
                 *quant, f"{found[first]:.3f}", f"{found[top]:.3f}",
                 f"{row['logit_lens']['best_top1']:.3f} ({row['logit_lens']['final_top1']:.3f})",
                 f"{row['paraphrase']['span_ma']:.3f}" if "paraphrase" in row else "-", _relearn_cell(row),
                 _relearn_cell(row, "relearn_unrelated"),
                 f"{row['mia']['auc_loss']:.3f} / {row['mia']['auc_reference']:.3f}", f"{privleak(row, ref):+.2f}",
                 verdict_text]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Seconds each attack took on each model (the stage's own loading and writing not included)."""
    attacks = list(dict.fromkeys(a for row in rows.values() for a in row["attack_seconds"]))
    lines = ["| Model | " + " | ".join(attacks) + " | total |", "|" + "---|" * (len(attacks) + 2)]
    for name, row in rows.items():
        spent = row["attack_seconds"]
        cells = [f"{spent[a]:.1f}" if a in spent else "-" for a in attacks]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(spent.values()):.1f} |")
    return "\n".join(lines) + "\n"


def report(tracks: Mapping[str, Mapping[str, Mapping[str, Any]]], tolerance: float,
           privacy: Mapping[str, str] | None = None) -> str:
    """The whole Markdown report: one section per track (`privacy`: a track's privacy score column, by title)."""
    parts = ["# Robustness: does the forgetting hold under attack?\n",
             f"A value counts as recovered when it exceeds the retrained reference's by more than {tolerance:g} "
             "(PrivLeak: its magnitude). Edit/step: the median size of the model's changed weights over the rounding "
             "step (below 0.5 mostly rounds back to the fine-tuned weights). Lens: the share of secret tokens that "
             "are the top prediction of some layer (of the output layer). Paraphrase: the secret behind its "
             "category's other sentence templates (never seen with it in training). Relearn: the attacker fine-tunes "
             "on half of D_f, the other half is measured; the best checkpoint counts. Relearn on unrelated text: the "
             "attacker fine-tunes on never-trained, secret-free texts of the same domain only (held-out emails; the "
             "masked track's validation texts, masked at random), all of D_f is measured.\n",
             "Causal LM: span MA is the teacher-forced accuracy on the secret spans of D_f; leak@k the share of "
             "secrets emitted exactly in one of k sampled continuations; MIA the AUC of telling D_f from held-out "
             "emails by the model's loss, and by its loss minus the retrained model's (0.5 = as private as "
             "retraining; the held-out emails hold no secret, so the plain loss AUC also measures how unlikely the "
             "secrets are in themselves, and MUSE's PrivLeak, relative to the retrained model's loss AUC, is large "
             "when that AUC is small).\n",
             "Masked LM (one table per category, each method's model edited for it): span MA is the share of a "
             "secret's tokens that are the top prediction at their [MASK]; hit@k the share of secrets whose every "
             "token ranks within the top k candidates; MIA the AUC of telling the secrets from never-planted controls "
             "of the same format and templates by their tokens' scores, so the plain loss AUC is meaningful here.\n"]
    if any(title.startswith(BENCH_PREFIX) for title in tracks):
        parts.append(BENCH_NOTE)
    for track, rows in tracks.items():
        parts.append(f"## {track}\n\n{table(rows, tolerance, (privacy or {}).get(track))}")
        parts.append(f"### {track}: seconds per attack\n\n{cost(rows)}")
    return "\n".join(parts)
