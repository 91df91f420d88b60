"""The one interface every unlearning method implements, and its input/output records.

A method is a module (or object) with `name`, a frozen-dataclass `Config` and `run`; its
registry key doubles as the params.yaml key, the DVC foreach item and the MLflow tag.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import numpy as np
from torch import Tensor, nn

from lib.adapter import FFNAdapter
from lib.data.records import SecretRecord
from lib.masking import MaskedRows


@dataclass(frozen=True)
class MethodInputs:
    """Everything a method may use for one privacy category (all on CPU)."""

    category: str
    attribution: Tensor  # (L, d_ff) Grad x Act summed over the category's bag
    activations: Tensor  # (N, L, d_ff) bag activations at the masked positions
    cluster_labels: dict[int, np.ndarray] | None  # layer -> (d_ff,) labels from clustering
    seed: int
    # optional: what gradient/steering methods read (None when the pipeline has not computed it)
    rows: MaskedRows | None = None  # one masked row per memorized secret token (GARE, DEPN)
    ig: Tensor | None = None  # (R, L, d_ff) Integrated Gradients of `rows` (DEPN, APNEAP)
    records: tuple[SecretRecord, ...] = ()  # the memorized secrets being forgotten (APNEAP)
    tokenizer: Any = None  # the model's tokenizer (APNEAP's desensitized counterparts)


@dataclass(frozen=True)
class EditReport:
    """What a method changed and how long selection and editing took."""

    method: str
    category: str
    neurons: tuple[tuple[int, int], ...]  # (layer, neuron) in edit (rank) order
    clusters_used: int | None
    n_weights_edited: int
    fraction_weights_edited: float
    selection_seconds: float
    edit_seconds: float


class Method(Protocol):
    """An unlearning method: `run` edits `model` IN PLACE (callers pass a copy)."""

    name: str
    Config: type
    selection_stages: tuple[str, ...]  # upstream stages ("attribution", "clustering", "ig") timed as selection
    reads: tuple[str, ...]  # MethodInputs fields beyond category/seed that run() uses

    def run(self, model: nn.Module, adapter: FFNAdapter, inputs: MethodInputs,
            cfg: Any) -> EditReport:
        """Select neurons from `inputs` and edit `model` through `adapter`."""
        ...


def make_config(config_cls: type, params: Mapping[str, Any]) -> Any:
    """Build a frozen Config from a params mapping; unknown or missing keys -> ValueError."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown {config_cls.__module__}.Config keys {unknown}; allowed: {sorted(fields)}")
    try:
        return config_cls(**params)
    except TypeError as err:  # a required field without default is missing
        raise ValueError(f"{config_cls.__module__}.Config: {err}; allowed keys: {sorted(fields)}") from err
