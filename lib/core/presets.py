"""Params presets: a preset file overrides some keys of params.yaml (nested merge)."""
from __future__ import annotations

from typing import Any

# mappings whose keys are names the user chooses (a preset replaces them whole, new names allowed)
REPLACED = ("benchmarks.runs",)


def merge(base: dict[str, Any], overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Nested copy of `base` with `overrides` applied; keys absent from `base` are errors (except under REPLACED)."""
    out = dict(base)
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if path in REPLACED:
            out[key] = value
            continue
        if key not in base:
            raise ValueError(f"preset key {path} does not exist in params.yaml")
        both_maps = isinstance(value, dict) and isinstance(base[key], dict)
        out[key] = merge(base[key], value, path) if both_maps else value
    return out
