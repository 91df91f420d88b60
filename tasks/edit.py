"""Prefect task of the edit stage: one registered method on one category."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from transformers import PreTrainedModel

from lib.adapter import FFNAdapter
from lib.methods import get_method
from lib.methods.base import EditReport, MethodInputs, make_config


def method_config(method: str, section: dict[str, Any], category: str,
                  overrides: dict[str, Any] | None = None) -> Any:
    """The method's Config for one category: shared keys, that category's edit values, then overrides."""
    values = dict(section)
    values.update(values.pop("edit", {}).get(category, {}))
    values.update(overrides or {})
    return make_config(get_method(method).Config, values)


@task(name="edit", task_run_name="edit-{method}-{inputs.category}", cache_policy=NO_CACHE)
def edit_task(model: PreTrainedModel, method: str, section: dict[str, Any], inputs: MethodInputs,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the method in place on `model`; returns its report as plain data."""
    cfg = method_config(method, section, inputs.category, overrides)
    report: EditReport = get_method(method).run(model, FFNAdapter.for_model(model), inputs, cfg)
    return asdict(report)
