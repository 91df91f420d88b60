"""One entry point per benchmark suite: rebuild its evaluation sets from JSON and score a model on them."""
from __future__ import annotations

from typing import Any

from torch import nn

from lib.bench import lume, tofu

SUITES = ("tofu", "lume")


def check_suite(suite: str) -> str:
    """A known suite name, else ValueError naming the allowed ones."""
    if suite not in SUITES:
        raise ValueError(f"benchmark suite {suite!r} unknown; allowed: {', '.join(SUITES)}")
    return suite


def sets_from_json(suite: str, raw: dict[str, Any]) -> Any:
    """TOFU EvalSets, or LUME {"forget": Subset, "retain": Subset}, from their JSON form."""
    if check_suite(suite) == "tofu":
        return tofu.EvalSets(**raw)
    return {name: lume.Subset(tuple(part["members"]), tuple(part["non_members"])) for name, part in raw.items()}


def evaluate(suite: str, model: nn.Module, tokenizer: Any, sets: Any, max_len: int, max_new: int,
             batch_size: int) -> dict[str, Any]:
    """Every score of the suite for one model (numbers and counts only, no text)."""
    scorer = tofu.evaluate_tofu if check_suite(suite) == "tofu" else lume.evaluate_lume
    return scorer(model, tokenizer, sets, max_len, max_new, batch_size)
