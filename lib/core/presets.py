"""Params presets: a preset file overrides some keys of params.yaml (nested merge)."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import yaml

# mappings whose keys are names the user chooses (a preset replaces them whole, new names allowed)
REPLACED = ("benchmarks.runs", "calibration.spaces", "causal.calibration.spaces", "benchmarks.calibration.spaces")


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


def names(folder: Path) -> list[str]:
    """The presets in `folder` (one YAML file each), sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def merged_text(params_file: Path, folder: Path, name: str) -> str:
    """params.yaml with `folder`/<name>.yaml merged in, as YAML text (validate it before use)."""
    preset = folder / f"{name}.yaml"
    if name not in names(folder):
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(names(folder))}")
    base = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    return yaml.safe_dump(merge(base, yaml.safe_load(preset.read_text(encoding="utf-8")) or {}), sort_keys=False)


def write_merged(params_file: Path, folder: Path, name: str) -> None:
    """Merge `folder`/<name>.yaml into `params_file`, written whole (a temp sibling renamed). Only the preset's keys
    change: comments, order and layout of the rest stay (round-trip YAML, as `dvc exp run -S` writes it); should
    the round trip read back differently (a float written without a dot reads as text), plain YAML is written."""
    from ruamel.yaml import YAML

    text = merged_text(params_file, folder, name)
    rt = YAML()
    rt.width = 4096  # the file's own line breaks, never new ones
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    # a float as PyYAML writes it (1.0e-05): YAML 1.1 readers take 1e-05 for text
    rt.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float",
                                                                          yaml.safe_dump(v).splitlines()[0]))
    data = rt.load(params_file.read_text(encoding="utf-8"))
    _set_keys(data, yaml.safe_load((folder / f"{name}.yaml").read_text(encoding="utf-8")) or {})
    stream = io.StringIO()
    rt.dump(data, stream)
    if yaml.safe_load(stream.getvalue()) == yaml.safe_load(text):
        text = stream.getvalue()
    temp = params_file.with_name(f".{params_file.name}.preset")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, params_file)


def _set_keys(node: Any, overrides: dict[str, Any], where: str = "") -> None:
    """Set each key of `overrides` in the round-trip mapping `node`, recursing into mappings (not under REPLACED);
    lists keep the flow style ([a, b]) the file uses."""
    from ruamel.yaml.comments import CommentedSeq

    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if isinstance(value, dict) and isinstance(node.get(key), dict) and path not in REPLACED:
            _set_keys(node[key], value, path)
            continue
        if isinstance(value, list):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        node[key] = value
