"""FTM: the fine-tuned model itself, no unlearning (the reference row of every table)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lib.methods import Inputs, Report

label = "FTM"  # the name every report prints
families = ("masked", "causal")
needs: tuple[str, ...] = ()
kind = "neurons"  # it changes nothing, which a neuron patch proves


@dataclass(frozen=True)
class Config:
    """FTM has no parameters."""


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Leave the model untouched and report an empty edit."""
    return Report(strength=0.0, strength_name="neurons", steps=0, trainable=0)
