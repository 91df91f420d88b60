"""Prefect tasks of the attack stages: every attack on one model (lib.attacks.audit), and the retrained reference's
membership statistics, content-cached: every attack stage reads the same ones."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from lib.attacks import mia
from lib.attacks.audit import AttacksConfig, Probe, audit
from lib.core.io import file_digest, load_tensors, save_tensors
from tasks import cached_task_options, code_digest, make_token, store_path


@task(name="attack", task_run_name="attack-{label}", cache_policy=NO_CACHE)
def attack_task(label: str, model: nn.Module, reference: Sequence[Sequence[mia.TokenStats]], parent: nn.Module,
                probe: Probe, cfg: AttacksConfig) -> dict[str, Any]:
    """Run every attack on `model` (`label` names the run in the UI); their numbers (no text)."""
    return audit(model, reference, parent, probe, cfg)


@task(name="membership-stats", task_run_name="membership-stats-{label}", **cached_task_options())
def membership_stats_task(model: nn.Module, probe: Probe, label: str, cache_token: str) -> str:
    """probe.membership_stats(model) saved under the token (.cache/store); the file's path."""
    path = store_path(cache_token)
    save_tensors(path, mia.pack(probe.membership_stats(model)))
    return str(path)


def reference_stats(reference: nn.Module, folder: Path, probe: Probe, label: str) -> list[list[mia.TokenStats]]:
    """The retrained reference's membership statistics, read once for every attack stage on the same items: keyed
    by the model's files, probe.membership_key() and the probe's code (its import closure)."""
    token = make_token(kind="membership", model=file_digest(folder), items=probe.membership_key(),
                       code=code_digest(importlib.import_module(type(probe).__module__)))
    path = Path(membership_stats_task(reference, probe, label, cache_token=token))
    if not path.is_file():  # the cache record outlived the store
        path = Path(membership_stats_task.with_options(refresh_cache=True)(reference, probe, label, cache_token=token))
    return mia.unpack(load_tensors(path))
