"""Prefect task that runs one registered method on a model, for every track and family."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from transformers import PreTrainedModel

from lib.methods import Inputs, Outcome, unlearn


@task(name="unlearn", task_run_name="unlearn-{name}", cache_policy=NO_CACHE)
def unlearn_task(name: str, model: PreTrainedModel, inputs: Inputs, cfg: Any) -> Outcome:
    """Run method `name` on `model` in place; its outcome (report, edit, changed parameters, seconds)."""
    return unlearn(name, model, inputs, cfg)
