"""Prefect task of the attack stages: every attack on one model (lib.attacks.audit)."""
from __future__ import annotations

from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from lib.attacks.audit import AttacksConfig, audit
from lib.families.causal import CausalFamily, Sequences


@task(name="attack", task_run_name="attack-{label}", cache_policy=NO_CACHE)
def attack_task(label: str, model: nn.Module, reference: nn.Module, parent: nn.Module, forget: Sequences,
                holdout: Sequences, texts: tuple[Sequence[str], Sequence[str]], family: CausalFamily,
                cfg: AttacksConfig) -> dict[str, Any]:
    """Run every attack on `model` (`label` names the run in the UI); their numbers (no text)."""
    return audit(model, reference, parent, forget, holdout, texts, family, cfg)
