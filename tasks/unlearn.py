"""Prefect task that runs one registered method on a model, for every track and family."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from transformers import PreTrainedModel

from lib.methods import Inputs, Outcome, unlearn


@task(name="unlearn", task_run_name="unlearn-{name}-{target}", cache_policy=NO_CACHE)
def unlearn_task(name: str, target: str, model: PreTrainedModel, inputs: Inputs, cfg: Any) -> Outcome:
    """Run method `name` on `model` in place (`target`, what it forgets, names the run in the UI); its outcome."""
    return unlearn(name, model, inputs, cfg)
