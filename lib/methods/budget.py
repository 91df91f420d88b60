"""A causal track's stop rule for the methods with a fixed neuron budget K (SNKU, DEPN, GARE, Random-K).

The masked track compares neuron methods at one K (the SNKU paper's protocol); the causal tracks compare every
method at the point where the forget set first meets the stop threshold (NeuMuter paper, Eq. 17). A method
whose Config has a budget `k` meets it here the way the IG baseline does: K = k, 2k, 4k, ... up to k_max
(lib.methods.ig.schedule), each try run from the input model (the previous try's edit reverted bit for bit),
the first try that meets the rule kept, or the last one. A method whose selection holds fewer neurons than a
K (DEPN's kept neurons, SNKU's filtered clusters) refuses it before editing: the previous try is put back and
the run ends there, not reached. Without a stop rule the method runs once at its k.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.editing import apply_edit
from lib.methods import Inputs, Outcome, get, unlearn
from lib.methods.ig import schedule
from lib.methods.training import forgotten


def budgeted(name: str) -> bool:
    """Whether method `name` has a neuron budget `k` in its Config (a neuron method)."""
    method = get(name)
    return method.kind == "neurons" and "k" in {f.name for f in dataclasses.fields(method.Config)}


def unlearn_to_stop(name: str, model: nn.Module, inputs: Inputs, cfg: Any, k_max: int) -> Outcome:
    """Run method `name` in place; a budgeted method under a stop rule grows K from cfg.k until the rule holds."""
    if inputs.stop is None or not budgeted(name):
        return unlearn(name, model, inputs, cfg)
    adapter = FFNAdapter.for_model(model)
    tries = schedule(cfg.k, max(k_max, cfg.k), adapter.n_layers * adapter.d_ff)
    history: dict[str, Any] = {"neurons": [], "max_ma": []}
    outcome, seconds, done = unlearn(name, model, inputs, cfg), 0.0, False
    for k in tries:
        if k != cfg.k:
            apply_edit(model, outcome.edit, revert=True)  # each try starts from the input model
            try:
                outcome = unlearn(name, model, inputs, dataclasses.replace(cfg, k=k))
            except ValueError as err:  # the selection holds fewer than k neurons: keep the previous try
                apply_edit(model, outcome.edit)
                history["refused"] = f"k={k}: {err}"
                break
        seconds += outcome.seconds
        done, worst = forgotten(model, inputs)
        history["neurons"].append(k)
        history["max_ma"].append(worst)
        if done:
            break
    report = dataclasses.replace(outcome.report, reached=done, steps=len(history["neurons"]),
                                 details={**outcome.report.details, "history": history})
    return dataclasses.replace(outcome, report=report, seconds=seconds)
