"""The causal track's calibration: one trial (lib.families.causal_trial), its cache key (tasks.causal_runs), the
report's causal section and the params check."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from flows.check import check_calibration
from lib.core.calibration import CalibrationConfig, Range
from lib.core.params import ParamsError
from lib.families.causal import CausalFamily, mean_ma, of
from lib.families.causal_trial import gap_ratio, trial
from lib.methods import Inputs, make_config
from lib.reports.calibration import report
from tasks.causal_runs import inputs_digest
from tests.tiny_models import memorise_ffn, tiny_llama

FAMILY = CausalFamily(SimpleNamespace(pad_token_id=0), batch_size=4)
FORGET = of([[11, 17, 42, 88, 23, 5, 61, 30, 77, 2], [64, 54, 9, 33, 71, 12, 95, 48, 2],
             [37, 81, 26, 58, 14, 99, 45, 70, 2]], [(4, 8), None, (2, 6)])
VALID = of([[5, 6, 7, 8, 9, 10, 2], [20, 21, 22, 23, 24, 2]])
RETAIN = of([[40, 41, 43, 44, 45, 46, 47, 2]])


@pytest.fixture(scope="module")
def memorised() -> torch.nn.Module:
    """A tiny LLaMA that memorised FORGET in its FFNs."""
    return memorise_ffn(tiny_llama(seed=0), FORGET).eval()


def test_a_trial_edits_a_copy_at_the_values_given_without_the_stop_rule(memorised: torch.nn.Module) -> None:
    """GA at a strong setting: D_f's MA falls from 1 on the copy; the model given keeps every weight; the stop
    threshold in the inputs is ignored (a threshold of 1.0 would stop GA before its first step)."""
    before = {k: v.clone() for k, v in memorised.state_dict().items()}
    inputs = Inputs(family=FAMILY, forget=FORGET, retain=RETAIN, stop=1.0, seed=0)
    weak = trial(memorised, "ga", make_config("ga", {"learning_rate": 1e-4, "max_steps": 1, "batch_size": 4}),
                 inputs, VALID, 4)
    strong = trial(memorised, "ga", make_config("ga", {"learning_rate": 5e-2, "max_steps": 10, "batch_size": 4}),
                   inputs, VALID, 4)
    assert mean_ma(memorised, FORGET, 0, 4) == 1.0 and weak["ma"] >= 0.9
    assert strong["ma"] < weak["ma"] - 0.3 and strong["valid_ppl"] > 1.0 and 0 < strong["changed_frac"] <= 1
    assert set(strong) == {"ma", "span_ma", "valid_ppl", "changed_frac", "seconds"}
    assert all(torch.equal(v, before[k]) for k, v in memorised.state_dict().items())


def test_the_gap_ratio_is_the_distance_to_the_retrained_model_over_the_fine_tuned_ones() -> None:
    """0 at the retrained model's MA, 1 at the fine-tuned model's, and over-unlearning is a gap too."""
    assert gap_ratio(0.4, 0.9, 0.4) == 0.0 and gap_ratio(0.9, 0.9, 0.4) == 1.0
    assert gap_ratio(0.5, 0.9, 0.4) == pytest.approx(0.2) and gap_ratio(0.3, 0.9, 0.4) == pytest.approx(0.2)


def test_the_trial_key_reads_only_what_the_method_reads() -> None:
    """D_r is part of the key of a method that needs it (NPO+RT, SIMU ...), not of GA's; D_f always is."""
    inputs = Inputs(family=FAMILY, forget=FORGET, retain=RETAIN, seed=0)
    other_retain = dataclasses.replace(inputs, retain=of([[40, 41, 2]]))
    other_forget = dataclasses.replace(inputs, forget=FORGET.subset([0, 1]))
    assert inputs_digest(inputs, ("forget",)) == inputs_digest(other_retain, ("forget",))
    assert inputs_digest(inputs, ("forget", "retain")) != inputs_digest(other_retain, ("forget", "retain"))
    assert inputs_digest(inputs, ("forget",)) != inputs_digest(other_forget, ("forget",))


def causal_result(reached: bool | None, trials: int = 2) -> dict:
    """A causal calibration file's numbers: two trials, the second at the point; none when nothing to forget."""
    rows = [{"number": i, "values": {"learning_rate": 1e-4 * (i + 1), "max_steps": 5}, "valid_ppl": 20.0 + i,
             "gap_ratio": 0.3 - 0.25 * i, "refused": None} for i in range(trials)]
    return {"method": "ga", "metric": "ma", "target": 0.1, "valid_ppl_before": 19.0, "reached": reached,
            "best": rows[-1] if rows else None, "frontier": [r["number"] for r in rows], "trials": rows}


def test_the_report_has_a_causal_section_and_says_when_there_is_nothing_to_forget() -> None:
    """The causal table follows the masked categories; a method whose fine-tuned model is already at the retrained
    model's MA says so instead of 'every trial refused'."""
    text = report({"ga": {"causal": causal_result(True)}, "npo": {"causal": causal_result(None, trials=0)}},
                  ["TEL"], "calibration.png")
    causal = text.split("## Causal LM (MA of D_f)\n")[1]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in causal.splitlines() if line.startswith("| ")}
    assert rows["GA"].startswith("| GA | yes | learning_rate=0.0002, max_steps=5 | 19.00 → 21.00 | 0.050 | 2 (0) |")
    assert "| nothing to forget |" in rows["NPO"] and "## TEL" not in text


def test_a_calibrated_causal_method_needs_a_causal_section() -> None:
    """The error names the causal track's key and lists its sections."""
    cfg = CalibrationConfig(methods=("ga",), spaces={"ga": {"max_steps": Range(1, 4)}})
    check_calibration(cfg, {"ga": {}}, "causal.")
    with pytest.raises(ParamsError, match=r"causal.calibration.methods contains 'ga'; allowed: methods with a "
                                          r"section under causal.methods: \['npo'\]"):
        check_calibration(cfg, {"npo": {}}, "causal.")
    with pytest.raises(ValueError, match="causal.calibration.spaces.ga.beta is no numeric field"):
        check_calibration(CalibrationConfig(methods=("ga",), spaces={"ga": {"beta": Range(0.1, 1)}}), {"ga": {}},
                          "causal.")
