"""Registry of unlearning methods; a key is also the params key, DVC foreach item and MLflow tag."""
from __future__ import annotations

from lib.methods import apneap, depn, ftm, gare, random_neurons, snku
from lib.methods.base import EditReport, Method, MethodInputs, make_config

METHODS: dict[str, Method] = {m.name: m for m in (ftm, gare, depn, apneap, snku, random_neurons)}

__all__ = ["METHODS", "EditReport", "Method", "MethodInputs", "get_method", "make_config"]


def get_method(name: str) -> Method:
    """The registered method called `name`; unknown names -> ValueError listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]
