"""Prefect task of the causal calibration stage: one trial (a method at given strength on a copy of the fine-tuned
model, scored), content-cached, so a rerun with the same params costs nothing and a new trial only its own."""
from __future__ import annotations

from typing import Any

import torch
from prefect import task
from transformers import PreTrainedModel

import lib.families.causal_trial
from lib.core.io import json_digest, tensors_digest
from lib.families.causal import Sequences
from lib.families.causal_trial import trial
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
