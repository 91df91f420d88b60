"""Prefect task of the causal calibration stages (the causal track's and a benchmark run's): one trial (a method at
given strength on a copy of the fine-tuned model, scored), content-cached, so a rerun with the same params costs
nothing and a new trial only its own; and the search over trials that both stages run."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from prefect import task
from transformers import PreTrainedModel

import lib.families.causal_trial
from lib.core.calibration import CalibrationConfig, calibrated, frontier, search
from lib.core.io import json_digest, tensors_digest
from lib.families.causal import Sequences
from lib.families.causal_trial import gap_ratio, scores, trial
from lib.methods import STATISTICS, Inputs, get, make_config
from tasks import cached_task_options, code_digest, make_token


def sequences_digest(seqs: Sequences | None) -> str | None:
    """Content digest of token sequences and their spans (None: none given)."""
    return None if seqs is None else json_digest([seqs.ids, seqs.spans])


def inputs_digest(inputs: Inputs, needs: tuple[str, ...]) -> str:
    """Content digest of what a method reads of its inputs: D_f always, D_r / neighbours / statistics when needed."""
    stats = {name: getattr(inputs.stats, name) for name in STATISTICS if name in needs and name != "clusters"
             and getattr(inputs.stats, name) is not None}
    if "ig" in needs and inputs.stats.ig_owner is not None:
        stats["ig_owner"] = inputs.stats.ig_owner
    if "clusters" in needs and inputs.stats.clusters:
        stats.update({f"clusters.{layer}": torch.as_tensor(labels) for layer, labels in inputs.stats.clusters.items()})
    read = [inputs.forget, inputs.retain if "retain" in needs else None,
            inputs.neighbours if "neighbours" in needs else None]
    return json_digest([tensors_digest(stats), *(sequences_digest(seqs) for seqs in read)])  # type: ignore[arg-type]


def trial_token(model_digest: str, method: str, section: dict[str, Any] | None, values: dict[str, Any],
                inputs: Inputs, valid: Sequences, batch_size: int) -> str:
    """Cache key of a trial: the fine-tuned weights, the method's section and searched values, what it reads, the
    held-out texts and the code that runs."""
    return make_token(model=model_digest, method=method, section=section, values=values,
                      inputs=inputs_digest(inputs, tuple(get(method).needs)), valid=sequences_digest(valid),
                      batch_size=batch_size, code=code_digest(get(method), lib.families.causal_trial))


@task(name="causal-trial", task_run_name="{label}", **cached_task_options())
def trial_task(base: PreTrainedModel, method: str, section: dict[str, Any] | None, values: dict[str, Any],
               inputs: Inputs, valid: Sequences, batch_size: int, label: str, cache_token: str) -> dict[str, float]:
    """One trial's numbers (MA / span MA of D_f, held-out PPL, changed share, seconds); no text."""
    cfg = make_config(method, section, None, values)
    return trial(base, method, cfg, inputs, valid, batch_size)


def calibrate(model: PreTrainedModel, reference: PreTrainedModel, method: str, section: dict[str, Any] | None,
              inputs: Inputs, valid: Sequences, batch_size: int, cal: CalibrationConfig, model_digest: str
              ) -> dict[str, Any]:
    """The seeded search over the method's strength fields on copies of `model` (saved with `model_digest`) for the
    lowest held-out PPL (`valid`) whose gap of D_f's MA to the retrained `reference`'s is at most cal.target times
    the fine-tuned model's: both models' scores, reached, the calibrated point, the frontier and every trial
    (no trial when the fine-tuned model is no more accurate on D_f than the reference: nothing to forget)."""
    pad = inputs.family.pad_id
    before = scores(model, inputs.forget, valid, pad, batch_size)
    retrained = scores(reference, inputs.forget, valid, pad, batch_size)
    out: dict[str, Any] = {"method": method, "metric": "ma", "ma_before": before["ma"], "ma_retrain": retrained["ma"],
                           "valid_ppl_before": before["valid_ppl"], "retrain_valid_ppl": retrained["valid_ppl"],
                           "gap_before": before["ma"] - retrained["ma"], "target": cal.target}
    if out["gap_before"] <= 0:
        return {**out, "reached": None, "best": None, "frontier": [], "trials": []}

    def evaluate(values: dict[str, Any]) -> tuple[float, float]:
        """One cached trial: (held-out PPL, gap ratio); ValueError when the method refuses the values."""
        make_config(method, section, None, values)  # a refused value fails here, before the task
        token = trial_token(model_digest, method, section, values, inputs, valid, batch_size)
        state = trial_task(model, method, section, values, inputs, valid, batch_size,
                           label=f"{method}-" + "-".join(f"{k}={v:.3g}" for k, v in values.items()),
                           cache_token=token, return_state=True)
        if state.is_failed():  # e.g. SNKU's clusters hold fewer neurons than a K tried
            raise ValueError(str(state.message).removeprefix("Task run encountered an exception "))
        record = state.result()
        return record["valid_ppl"], gap_ratio(record["ma"], before["ma"], retrained["ma"])

    trials = search(get(method).Config, cal.spaces[method], evaluate, cal)
    best, reached = calibrated(trials, cal.target)
    return {**out, "reached": reached, "best": dataclasses.asdict(best) if best else None,
            "frontier": [t.number for t in frontier(trials)], "trials": [dataclasses.asdict(t) for t in trials]}
