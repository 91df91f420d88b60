"""Memorized-set selection: thresholds, strict comparison, the report and its privacy."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lib.data.records import SecretRecord
from lib.families.memorized import ScoreSummary, is_memorized, memorization_report, require_memorized, resolve_threshold


def test_threshold_number_passes_through():
    assert resolve_threshold(12.5, np.zeros(0), True) == 12.5
    assert resolve_threshold(3, np.arange(10.0), False) == 3.0


def test_threshold_auto_both_directions():
    controls = np.arange(101.0)  # 0..100: the p-th percentile is exactly p
    assert resolve_threshold("auto", controls, higher_is_memorized=True) == pytest.approx(95.0)
    assert resolve_threshold("auto", controls, higher_is_memorized=False) == pytest.approx(5.0)
    assert resolve_threshold("auto", controls, True, quantile=0.9) == pytest.approx(90.0)


@pytest.mark.parametrize("spec", ["high", "95", True, float("nan")])
def test_threshold_rejects_other_specs(spec):
    with pytest.raises(ValueError, match="'auto'"):
        resolve_threshold(spec, np.arange(5.0), True)


def test_threshold_auto_needs_controls():
    with pytest.raises(ValueError, match="control"):
        resolve_threshold("auto", np.zeros(0), True)


def test_is_memorized_is_strict():
    scores = np.array([1.0, 2.0, 3.0])
    assert is_memorized(scores, 2.0, higher=True).tolist() == [False, False, True]
    assert is_memorized(scores, 2.0, higher=False).tolist() == [True, False, False]


def _rec(rid: str, category: str, reps: int, control: bool = False) -> SecretRecord:
    secret = {"TEL": "5 5 5 0 1 2 3 4 5 6", "NAME": "Zelda Quuxworth", "RANDOM": "qz#81Xp"}[category]
    return SecretRecord(rid, category, "PREFIX-TEXT ", secret + rid[-1], " SUFFIX-TEXT", reps, control)


SECRETS = [_rec("TEL-0001", "TEL", 1), _rec("TEL-0002", "TEL", 5), _rec("TEL-0003", "TEL", 5),
           _rec("TEL-0004", "TEL", 10), _rec("RANDOM-0001", "RANDOM", 1), _rec("RANDOM-0002", "RANDOM", 10)]
SECRET_SCORES = np.array([2.0, 20.0, 9.0, 30.0, 50.0, 3.0])
CONTROLS = [_rec(f"CTRL-TEL-000{i}", "TEL", 0, True) for i in range(5)] + \
    [_rec(f"CTRL-RANDOM-000{i}", "RANDOM", 0, True) for i in range(3)]
CONTROL_SCORES = np.array([1.0, 2.0, 3.0, 4.0, 15.0, 40.0, 60.0, 80.0])


def _report():
    return memorization_report(SECRETS, SECRET_SCORES, CONTROLS, CONTROL_SCORES, {"TEL": 8.0, "RANDOM": "auto"})


def test_report_per_category():
    report = _report()
    tel, rnd = report.categories["TEL"], report.categories["RANDOM"]
    assert list(report.categories) == ["TEL", "RANDOM"]
    assert (tel.threshold, tel.n_secrets, tel.n_controls, tel.n_memorized) == (8.0, 4, 5, 3)
    assert tel.memorized_ids == ("TEL-0004", "TEL-0002", "TEL-0003")  # most memorized first
    assert tel.control_pass_rate == pytest.approx(1 / 5)  # only 15.0 exceeds 8.0
    assert tel.memorized_by_repetitions == {5: 2, 10: 1}
    assert tel.secrets_by_repetitions == {1: 1, 5: 2, 10: 1}
    # RANDOM: lower is memorized; auto = 5th percentile of [40, 60, 80] = 42
    assert rnd.threshold == pytest.approx(42.0) and not rnd.higher_is_memorized
    assert rnd.memorized_ids == ("RANDOM-0002",)
    assert rnd.control_pass_rate == pytest.approx(1 / 3)  # 40 < 42
    assert report.memorized_ids() == ("TEL-0004", "TEL-0002", "TEL-0003", "RANDOM-0002")


def test_report_quantiles():
    tel = _report().categories["TEL"]
    assert tel.secret_scores == ScoreSummary(min=2.0, p5=float(np.quantile([2, 9, 20, 30], 0.05)),
                                             p25=float(np.quantile([2, 9, 20, 30], 0.25)), p50=14.5,
                                             p75=float(np.quantile([2, 9, 20, 30], 0.75)),
                                             p95=float(np.quantile([2, 9, 20, 30], 0.95)), max=30.0, mean=15.25)
    assert tel.control_scores.max == 15.0 and tel.control_scores.p50 == 3.0


def test_report_dict_has_no_private_strings():
    text = json.dumps(_report().to_dict())
    for record in SECRETS + CONTROLS:
        for private in (record.secret, record.prefix.strip(), record.suffix.strip()):
            assert private not in text
    for fragment in ("Zelda", "qz#81", "5 5 5", "PREFIX", "SUFFIX"):
        assert fragment not in text
    assert "TEL-0004" in text


def test_report_validates_inputs():
    with pytest.raises(ValueError, match="RANDOM"):
        memorization_report(SECRETS, SECRET_SCORES, CONTROLS, CONTROL_SCORES, {"TEL": 8.0})
    with pytest.raises(ValueError, match="scores of shape"):
        memorization_report(SECRETS, SECRET_SCORES[:-1], CONTROLS, CONTROL_SCORES, {"TEL": 8.0, "RANDOM": 1.0})
    with pytest.raises(ValueError, match="CTRL-TEL-0000"):
        memorization_report(CONTROLS[:1], np.ones(1), [], np.zeros(0), {"TEL": 1.0})


def test_report_without_controls_uses_numbers():
    report = memorization_report(SECRETS[:2], SECRET_SCORES[:2], [], np.zeros(0), {"TEL": 1.0})
    assert report.categories["TEL"].control_pass_rate is None
    assert report.categories["TEL"].control_scores is None
    assert report.categories["TEL"].n_memorized == 2


def test_require_memorized():
    report = memorization_report(SECRETS, SECRET_SCORES, CONTROLS, CONTROL_SCORES, {"TEL": 100.0, "RANDOM": 1.0})
    with pytest.raises(ValueError, match="no memorized TEL secrets above threshold 100: train longer or lower"):
        require_memorized(report, ["TEL"])
    with pytest.raises(ValueError, match="RANDOM secrets below threshold 1: train longer or raise"):
        require_memorized(report, ["RANDOM"])
    with pytest.raises(ValueError, match="'NAME'"):
        require_memorized(report, ["NAME"])
    require_memorized(_report(), ["TEL", "RANDOM"])
