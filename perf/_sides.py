"""What the side-by-side benchmarks share: each side runs in a fresh interpreter so its peak RSS is its own."""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


def rss_mb() -> float:
    """This process's peak resident set size so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn(script: str, side: str, out: Path, argv: list[str]) -> dict[str, float]:
    """Run `script` as one side in a fresh interpreter; its last stdout line is its stats (JSON)."""
    cmd = [sys.executable, str(Path(script).resolve()), *argv, "--side", side, "--out", str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_sides(script: str, sides: tuple[str, ...], argv: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Each side of `script` in its own interpreter: (its stats, the result it saved), keyed by side."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = {side: spawn(script, side, Path(tmp) / f"{side}.pt", argv) for side in sides}
        # weights_only: the files are tensors this run's children just wrote
        return stats, {side: torch.load(Path(tmp) / f"{side}.pt", weights_only=True) for side in sides}


def causal_model(path: str | None, seed: int, **shape: Any) -> nn.Module:
    """The local checkpoint at `path` (AutoModelForCausalLM), or a seeded random LLaMA-style model of `shape`
    (LlamaConfig fields), in eval mode."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if path:
        return AutoModelForCausalLM.from_pretrained(path).eval()
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()


def time_sides(pair: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Run each side of `pair` `repeats` times, alternating so drift hits both: (median seconds, last result) by side."""
    times: dict[str, list[float]] = {side: [] for side in pair}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for side, run in pair.items():
            start = time.perf_counter()
            outs[side] = run()
            times[side].append(time.perf_counter() - start)
    return {side: statistics.median(t) for side, t in times.items()}, outs
