"""lib.core.calibration: a seeded search reaches a target within a tiny budget and returns the cheapest point that
does, the same trials for the same seed, refused values recorded; the frontier and the config's checks."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from lib.core.calibration import CalibrationConfig, Range, Trial, calibrated, check_space, frontier, search
from lib.core.params import Count, Positive


@dataclass(frozen=True)
class Knobs:
    """A method Config's strength fields: an integer and a float."""

    k: Count = 100
    sigma: Positive = 0.1
    name: str = "x"


SPACE = {"k": Range(10, 2000, log=True), "sigma": Range(0.01, 0.5)}
CFG = CalibrationConfig(target=0.1, n_trials=10, seed=3, methods=("m",), spaces={"m": SPACE})


def monotone(values: dict) -> tuple[float, float]:
    """More neurons forget more and cost more perplexity; sigma adds a little of both."""
    k, sigma = values["k"], values["sigma"]
    return 5.0 + k / 100 + sigma, 1.0 / (1.0 + k / 50) + 0.01 * sigma


def test_a_tiny_budget_reaches_the_target_at_the_cheapest_point_it_tried() -> None:
    trials = search(Knobs, SPACE, monotone, CFG)
    assert len(trials) == 10 and all(isinstance(t.values["k"], int) for t in trials)
    best, reached = calibrated(trials, 0.1)
    assert reached and best.gap_ratio <= 0.1
    assert best.valid_ppl == min(t.valid_ppl for t in trials if t.reached(0.1))


def test_same_seed_same_trials_other_seed_other_trials() -> None:
    first, again = search(Knobs, SPACE, monotone, CFG), search(Knobs, SPACE, monotone, CFG)
    assert [t.values for t in first] == [t.values for t in again]
    other = search(Knobs, SPACE, monotone, CalibrationConfig(0.1, 10, 4, ("m",), {"m": SPACE}))
    assert [t.values for t in other] != [t.values for t in first]


def test_refused_values_are_recorded_and_never_chosen() -> None:
    def picky(values: dict) -> tuple[float, float]:
        if values["k"] > 300:
            raise ValueError(f"k={values['k']} exceeds the 300 neurons the clusters hold")
        return monotone(values)

    trials = search(Knobs, SPACE, picky, CFG)
    refused = [t for t in trials if t.refused]
    assert refused and all(t.valid_ppl is None and "exceeds" in t.refused for t in refused)
    best, reached = calibrated(trials, 0.1)  # k <= 300 never gets the gap ratio to 0.1: the nearest is reported
    assert not reached and best.values["k"] <= 300
    assert best.gap_ratio == min(t.gap_ratio for t in trials if t.gap_ratio is not None)


def test_frontier_keeps_only_undominated_trials() -> None:
    trials = [Trial(0, {}, 9.0, 0.05), Trial(1, {}, 7.0, 0.2), Trial(2, {}, 8.0, 0.3), Trial(3, {}, 6.0, 0.5),
              Trial(4, {}, refused="no")]
    assert [t.number for t in frontier(trials)] == [0, 1, 3]
    assert calibrated([Trial(0, {}, refused="no")], 0.1) == (None, False)


def test_config_and_space_checks() -> None:
    with pytest.raises(ValueError, match="no space for 'm'"):
        CalibrationConfig(methods=("m",))
    with pytest.raises(ValueError, match="low < high"):
        Range(5, 1)
    with pytest.raises(ValueError, match="low > 0 with log"):
        Range(0, 1, log=True)
    with pytest.raises(ValueError, match="calibration.spaces.m.name is no numeric field of the method; allowed: k, sigma"):
        check_space(Knobs, {"name": Range(0, 1)}, "calibration.spaces.m")
