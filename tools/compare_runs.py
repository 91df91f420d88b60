"""Compare the stage outputs of two checkouts bit for bit: `python -m tools.compare_runs OLD NEW`.

For the same-machine check that a refactor changed no number: run the same stages on the same inputs
in two worktrees (old code, new code), then compare every safetensors file under data/ (torch.equal per
tensor) and every JSON file under metrics/ (exact values; keys naming a duration left out).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file

TIME_KEYS = ("seconds", "time_s")  # wall clocks differ run to run; a key containing one is left out


def tensors_diff(old: Path, new: Path) -> str | None:
    """None when both files hold the same tensors bit for bit, else what differs."""
    a, b = load_file(old), load_file(new)
    if set(a) != set(b):
        return f"tensor names differ: {sorted(set(a) ^ set(b))[:4]}"
    bad = [k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    return f"{len(bad)} tensors differ, e.g. {bad[:3]}" if bad else None


def _strip(x: Any) -> Any:
    """The JSON tree without duration keys."""
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not any(t in k for t in TIME_KEYS)}
    return [_strip(v) for v in x] if isinstance(x, list) else x


def json_diff(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Each place two JSON trees differ (numbers compared exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                yield f"{path}.{k}: only in {'new' if k not in a else 'old'}"
            else:
                yield from json_diff(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from json_diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r} -> {b!r}"


def compare(old: Path, new: Path, only_newer_than: float = 0.0) -> Iterator[tuple[str, str | None]]:
    """(relative path, None or the difference) for every output file both checkouts wrote after `only_newer_than`."""
    for folder, pattern in (("data", "*.safetensors"), ("metrics", "*.json")):
        for path in sorted((new / folder).rglob(pattern)):
            rel = path.relative_to(new)
            if not (old / rel).is_file() or min(path.stat().st_mtime, (old / rel).stat().st_mtime) <= only_newer_than:
                continue
            if pattern == "*.json":
                diffs = list(json_diff(_strip(json.loads((old / rel).read_text())), _strip(json.loads(path.read_text()))))
                yield str(rel), (f"{len(diffs)} differences, e.g. {diffs[:3]}" if diffs else None)
            else:
                yield str(rel), tensors_diff(old / rel, path)


def main(argv: list[str] | None = None) -> int:
    """Print one line per compared file; exit 1 when any differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--since", type=float, default=0.0, help="only files both runs wrote after this epoch second (e.g. the worktrees' checkout)")
    args = parser.parse_args(argv)
    rows = list(compare(args.old, args.new, args.since))
    for rel, diff in rows:
        print(f"{'identical' if diff is None else 'DIFFERS  '}  {rel}" + (f": {diff}" if diff else ""))
    print(f"{len(rows)} files compared, {sum(d is not None for _, d in rows)} differ")
    return int(any(d is not None for _, d in rows))


if __name__ == "__main__":
    sys.exit(main())
