"""Apply a params preset: `python -m flows.preset full` rewrites params.yaml (validated first)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from flows.check import check_params
from lib.core.io import write_text
from lib.core.params import ParamsError
from lib.core.presets import merge

PRESETS = Path("presets")


def apply_preset(name: str, params_file: Path = Path("params.yaml")) -> None:
    """Merge presets/<name>.yaml into params.yaml after validating the result."""
    preset = PRESETS / f"{name}.yaml"
    if not preset.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {sorted(p.stem for p in PRESETS.glob('*.yaml'))}")
    merged = merge(yaml.safe_load(params_file.read_text()), yaml.safe_load(preset.read_text()))
    text = yaml.safe_dump(merged, sort_keys=False)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    check_params(handle.name)  # the merged file must be valid before it replaces params.yaml
    Path(handle.name).unlink()
    write_text(params_file, text)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m flows.preset <name>", file=sys.stderr)
        sys.exit(2)
    try:
        apply_preset(sys.argv[1])
    except (ParamsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
