"""Compare metrics/ with another git revision's: `python -m tools.metrics_diff REV [--rel 1e-6] [--skip KEY ...]`.

Every number of every JSON file under metrics/ at REV is compared with the working tree's; a number counts as
equal within the relative tolerance (float results differ in the last bits across CPUs). Prints one line per
difference (file, key path, old -> new), per file or key that exists on one side only, and a summary; exit 1
when anything differs. Keys named by --skip (e.g. time_s, seconds) are wall clocks, not results.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
TIMES = ("time_s", "seconds", "selection_seconds", "edit_seconds", "upstream_seconds", "wall_s", "train_seconds")


def at_revision(rev: str) -> dict[str, Any]:
    """metrics/**/*.json at `rev`, parsed, keyed by path."""
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "metrics"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: json.loads(subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                                         text=True).stdout) for n in names if n.endswith(".json")}


def working_tree() -> dict[str, Any]:
    """metrics/**/*.json of the working tree, parsed, keyed by path."""
    return {str(p.relative_to(ROOT)): json.loads(p.read_text()) for p in sorted((ROOT / "metrics").rglob("*.json"))}


def differences(old: Any, new: Any, path: str, rel: float, skip: tuple[str, ...]) -> Iterator[str]:
    """'path: old -> new' for every leaf that differs beyond `rel` (keys in `skip` ignored)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key in skip:
                continue
            if key not in new or key not in old:
                yield f"{path}.{key}: {'only before' if key in old else 'only now'}"
            else:
                yield from differences(old[key], new[key], f"{path}.{key}", rel, skip)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from differences(a, b, f"{path}[{i}]", rel, skip)
    elif isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        if not (old == new or math.isclose(old, new, rel_tol=rel, abs_tol=1e-12)):
            yield f"{path}: {old!r} -> {new!r}"
    elif old != new:
        yield f"{path}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"


def main(argv: list[str] | None = None) -> int:
    """Print the differences between REV's metrics and the working tree's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--rel", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    parser.add_argument("--skip", nargs="*", default=list(TIMES), help=f"keys to ignore (default {' '.join(TIMES)})")
    args = parser.parse_args(argv)
    old, new = at_revision(args.rev), working_tree()
    lines = [f"{name}: only {'before' if name in old else 'now'}" for name in sorted(set(old) ^ set(new))]
    for name in sorted(set(old) & set(new)):
        lines += list(differences(old[name], new[name], name, args.rel, tuple(args.skip)))
    print("\n".join(lines) if lines else "no differences")
    print(f"{len(lines)} differences in {len(set(old) | set(new))} metrics files (rel {args.rel}, "
          f"ignoring {', '.join(args.skip)})", file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
