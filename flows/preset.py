"""Apply a params preset: `python -m flows.preset full` rewrites params.yaml (validated first)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from flows.check import check_params
from lib.core.params import ParamsError
from lib.core.presets import merged_text, write_merged

PRESETS = Path("presets")


def apply_preset(name: str, params_file: Path = Path("params.yaml")) -> None:
    """Merge presets/<name>.yaml into params.yaml (its comments kept) after validating the result."""
    text = merged_text(params_file, PRESETS, name)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    try:
        check_params(handle.name)  # the merged file must be valid before it replaces params.yaml
    finally:
        Path(handle.name).unlink()
    write_merged(params_file, PRESETS, name)  # keeps params.yaml's comments


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m flows.preset <name>", file=sys.stderr)
        sys.exit(2)
    try:
        apply_preset(sys.argv[1])
    except (ParamsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
