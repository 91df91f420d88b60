"""What the side-by-side benchmarks share: each side runs in a fresh interpreter so its peak RSS is its own."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def rss_mb() -> float:
    """This process's peak resident set size so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn(script: str, side: str, out: Path, argv: list[str]) -> dict[str, float]:
    """Run `script` as one side in a fresh interpreter; its last stdout line is its stats (JSON)."""
    cmd = [sys.executable, str(Path(script).resolve()), *argv, "--side", side, "--out", str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
