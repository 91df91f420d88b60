"""The forget gap to the retrain reference."""
from __future__ import annotations

import math

import pytest

from lib.core.metrics import forget_gap


def test_bounded_metrics_use_the_absolute_difference() -> None:
    assert forget_gap("exposure", 9.0, 1.5) == pytest.approx(7.5)
    assert forget_gap("mrr", 0.1, 0.4) == pytest.approx(0.3)


def test_random_perplexity_uses_the_log_ratio() -> None:
    assert forget_gap("random_ppl", 40.0, 4.0e6) == pytest.approx(math.log(1.0e5))
    assert forget_gap("random_ppl", 4.0e6, 40.0) == forget_gap("random_ppl", 40.0, 4.0e6)


def test_bad_input_names_the_value() -> None:
    with pytest.raises(ValueError, match="'ppl'.*exposure, mrr, random_ppl"):
        forget_gap("ppl", 1.0, 1.0)
    with pytest.raises(ValueError, match="value=0"):
        forget_gap("random_ppl", 0.0, 1.0)
