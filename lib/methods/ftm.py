"""FTM: the fine-tuned model itself, no unlearning (the reference row of every table)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lib.adapter import FFNAdapter
from lib.methods.base import EditReport, MethodInputs

name = "ftm"
selection_stages: tuple[str, ...] = ()
reads: tuple[str, ...] = ()  # the MethodInputs fields run() uses (the experiments cache key)


@dataclass(frozen=True)
class Config:
    """FTM has no parameters."""


def run(model: nn.Module, adapter: FFNAdapter, inputs: MethodInputs, cfg: Config) -> EditReport:
    """Leave the model untouched and report an empty edit."""
    return EditReport(method=name, category=inputs.category, neurons=(), clusters_used=None,
                      n_weights_edited=0, fraction_weights_edited=0.0, selection_seconds=0.0, edit_seconds=0.0)
