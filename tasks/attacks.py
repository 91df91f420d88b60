"""Prefect task of the attack stages: every attack on one model (lib.attacks.audit)."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from lib.attacks.audit import AttacksConfig, Probe, audit


@task(name="attack", task_run_name="attack-{label}", cache_policy=NO_CACHE)
def attack_task(label: str, model: nn.Module, reference: nn.Module, parent: nn.Module, probe: Probe,
                cfg: AttacksConfig) -> dict[str, Any]:
    """Run every attack on `model` (`label` names the run in the UI); their numbers (no text)."""
    return audit(model, reference, parent, probe, cfg)
