"""Paths and readers shared by the benchmark stages (data/bench/..., metrics/bench/...)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.bench.qa import encode_pairs
from lib.causal.batching import Sequences
from lib.io import read_json, read_jsonl
from lib.bench.suites import SUITES
from lib.params import BenchmarksParams, run_suite

ROOT = Path("data/bench")
SETS = ROOT / "sets"
METRICS = Path("metrics/bench")
REPORTS = Path("reports/bench")


def finetuned(suite: str) -> Path:
    """The suite's fine-tuned model (forget + retain)."""
    return ROOT / suite / "finetuned"


def reference(run: str) -> Path:
    """The run's reference model: the same recipe without the run's forget set."""
    return ROOT / run / "reference"


def prepared(run: str) -> Path:
    """Thresholds and NeuMuter neighbours of a run."""
    return ROOT / run / "prepared"


def suite_params(bench: BenchmarksParams, run_or_suite: str) -> Any:
    """TofuParams / LumeParams of a run or suite name."""
    suite = run_or_suite if run_or_suite in SUITES else run_suite(run_or_suite)[0]
    return getattr(bench, suite)


def pairs(path: Path) -> tuple[list[str], list[str]]:
    """(prompts, answers) of a JSONL of {"id", "prompt", "answer"} rows."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} holds no question-answer rows")
    return [r["prompt"] for r in rows], [r["answer"] for r in rows]


def encode(tokenizer: Any, path: Path, max_len: int) -> Sequences:
    """Sequences (answer spans) of a pairs file."""
    return encode_pairs(tokenizer, *pairs(path), max_len)


def thresholds(run: str) -> dict[str, float]:
    """The run's stop thresholds written by bench_prepare."""
    return read_json(prepared(run) / "thresholds.json")
