"""Registry of causal-LM unlearning methods; a key is also the params key (causal.methods.<key>),
the DVC foreach item of causal_unlearn / causal_evaluate, and the MLflow `method` tag."""
from __future__ import annotations

from types import ModuleType

from lib.causal.methods import di, fo_graddiff, ga, ig, neumuter, sga, simu, so_graddiff, sp, ta

CAUSAL_METHODS: dict[str, ModuleType] = {
    m.name: m for m in (neumuter, ga, sga, ta, di, ig, simu, fo_graddiff, so_graddiff, sp)
}


def get_causal_method(name: str) -> ModuleType:
    """The registered causal method called `name`; unknown names -> ValueError listing the known ones."""
    if name not in CAUSAL_METHODS:
        raise ValueError(f"unknown causal method {name!r}; registered: {', '.join(sorted(CAUSAL_METHODS))}")
    return CAUSAL_METHODS[name]
