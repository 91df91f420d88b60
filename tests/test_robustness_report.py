"""lib.reports.robustness: verdicts judged against the retrained row, the tables, the cost per attack."""
from __future__ import annotations

import copy
from typing import Any

from lib.reports.robustness import report, verdict


def row(span: float = 0.1, int4: float = 0.1, leak: float = 0.0, lens: float = 0.1, relearned: float = 0.1,
        auc: float = 0.5) -> dict[str, Any]:
    """One model's attack numbers."""
    return {"direct": {"span_ma": span},
            "int8": {"span_ma": span, "median_step": 0.003, "median_delta_over_step": 5.0, "changed_weights": 9},
            "int4": {"span_ma": int4, "median_step": 0.06, "median_delta_over_step": 0.3, "changed_weights": 9},
            "sampling": {"leak@1": leak / 2, "leak@16": leak},
            "logit_lens": {"final_top1": min(lens, span), "best_top1": lens, "median_best_rank": 3.0},
            "relearn": {"0": {"span_ma": span, "nll": 5.0}, "10": {"span_ma": relearned, "nll": 1.0}},
            "mia": {"auc_loss": auc, "auc_zlib": auc, "auc_min_k": auc, "auc_min_k_pp": auc, "auc_reference": auc},
            "attack_seconds": {"direct": 1.0, "int8": 3.0, "int4": 3.0, "sampling": 20.0, "logit_lens": 9.0,
                               "relearn": 25.0, "mia": 7.5}}


REF = row()


def test_a_model_no_attack_moves_beyond_the_reference_holds() -> None:
    assert verdict(row(span=0.15, lens=0.15, auc=0.52), REF, 0.1, ["int8", "int4"]) == "holds"


def test_each_attack_that_recovers_is_named() -> None:
    found = verdict(row(int4=0.4, leak=0.5, lens=0.6, relearned=0.7, auc=0.9), REF, 0.1, ["int8", "int4"])
    assert found == ("undone by 4-bit; leaks when sampled (leak@16); readable by logit lens; relearned in 10 steps; "
                     "membership leaks")


def test_members_less_likely_than_under_retraining_is_over_unlearning() -> None:
    assert verdict(row(auc=0.3), REF, 0.1, ["int8", "int4"]) == "over-unlearned (members less likely than under retraining)"


def test_the_best_relearning_checkpoint_counts() -> None:
    peaked = row()
    peaked["relearn"] = {"0": {"span_ma": 0.1, "nll": 5.0}, "5": {"span_ma": 0.6, "nll": 1.0},
                         "10": {"span_ma": 0.15, "nll": 2.0}}
    assert verdict(peaked, REF, 0.1, ["int8", "int4"]) == "relearned in 5 steps"


def test_direct_above_the_reference_is_not_forgotten() -> None:
    assert verdict(row(span=0.5), REF, 0.1, ["int8", "int4"]) == "not forgotten"


def test_report_rows_order_and_cost_table() -> None:
    rows = {"ga": row(relearned=0.8), "retrain": copy.deepcopy(REF), "original": row(span=0.9), "ig": row()}
    text = report({"Causal LM": rows}, 0.1)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:5]] == ["| original", "| ga", "| ig", "| retrain"]
    assert "8-bit span MA" in lines[0].split("4-bit")[0]  # 8 bits first
    assert lines[1].endswith("| before unlearning |") and lines[4].endswith("| reference |")
    assert "relearned in 10 steps" in lines[2] and lines[3].endswith("| holds |")
    assert "### Causal LM: seconds per attack" in text and "| ga | 1.0 | 3.0 | 3.0 | 20.0 | 9.0 | 25.0 | 7.5 | 68.5 |" in text


def masked_row(span: float = 0.1, hit: float = 0.0, paraphrase: float = 0.1, exposure: float = 2.0) -> dict[str, Any]:
    """A masked track's numbers: top-k candidates instead of sampling, the category's privacy score, paraphrases,
    no relearning (a category with one secret)."""
    out = row(span=span)
    del out["sampling"], out["relearn"]
    out["direct"]["privacy"] = exposure
    out["candidates"] = {"hit@1": hit / 2, "hit@8": hit}
    out["paraphrase"] = {"span_ma": paraphrase, "n": 4.0}
    out["attack_seconds"] = {"direct": 1.0, "candidates": 0.5, "paraphrase": 0.5}
    return out


def test_masked_rows_name_their_own_attacks() -> None:
    ref = masked_row()
    assert verdict(masked_row(hit=0.5, paraphrase=0.6), ref, 0.1, ["int8", "int4"]) == (
        "in the top-k candidates (hit@8); recalled under other prompts")
    assert verdict(masked_row(span=0.12), ref, 0.1, ["int8", "int4"]) == "holds"


def test_masked_table_has_the_privacy_column_and_ftm_first() -> None:
    rows = {"snku": masked_row(paraphrase=0.5), "ftm": masked_row(span=0.9, exposure=30.0), "retrain": masked_row()}
    text = report({"Masked LM: TEL": rows}, 0.1, {"Masked LM: TEL": "Exposure"})
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| Model | Span MA | Exposure | 8-bit") and "| hit@1 | hit@8 |" in lines[0]
    assert lines[1].startswith("| ftm | 0.900 | 30 |") and lines[1].endswith("| before unlearning |")
    assert "| 0.500 | - |" in lines[2] and lines[2].endswith("| recalled under other prompts |")  # paraphrase, relearn
    assert "| ftm | 1.0 | 0.5 | 0.5 | 2.0 |" in text  # the cost table: the attacks each track ran


def test_relearning_on_unrelated_text_is_its_own_column_and_verdict() -> None:
    """Judged against the reference's own unrelated-text curve; '-' where the attack did not run."""
    def unrelated(base: dict[str, Any], value: float) -> dict[str, Any]:
        out = copy.deepcopy(base)
        out["relearn_unrelated"] = {"0": {"span_ma": 0.1, "nll": 5.0}, "10": {"span_ma": value, "nll": 2.5}}
        return out

    ref = unrelated(REF, 0.1)
    assert verdict(unrelated(row(), 0.6), ref, 0.1, ["int8", "int4"]) == "back after 10 steps on unrelated text"
    assert verdict(unrelated(row(), 0.15), ref, 0.1, ["int8", "int4"]) == "holds"
    text = report({"Causal LM": {"ga": unrelated(row(), 0.6), "ig": row(), "retrain": ref}}, 0.1)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    column = lines[0].split(" | ").index("Relearn on unrelated text: best span MA (NLL)")
    assert [line.split(" | ")[column] for line in lines[1:4]] == ["0.600 (2.50) at 10", "-", "0.100 (2.50) at 10"]
