"""Prefect task that runs one registered method on a model, for every track and family."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from transformers import PreTrainedModel

from lib.methods import Inputs, Outcome, unlearn
from lib.methods.budget import unlearn_to_stop


@task(name="unlearn", task_run_name="unlearn-{name}-{target}", cache_policy=NO_CACHE)
def unlearn_task(name: str, target: str, model: PreTrainedModel, inputs: Inputs, cfg: Any,
                 k_max: int | None = None) -> Outcome:
    """Run method `name` on `model` in place (`target`, what it forgets, names the run in the UI); its outcome.

    With `k_max` (the causal tracks) a method with a neuron budget grows it up to k_max until the stop rule holds."""
    return unlearn(name, model, inputs, cfg) if k_max is None else unlearn_to_stop(name, model, inputs, cfg, k_max)
