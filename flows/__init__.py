"""The pipeline's stages: where each one reads and writes, and the one way to run a stage.

Every DVC stage runs `python -m flows.<stage> [item]`: the module's one flow, through `main`, which
reads its arguments, validates what the stage reads before any work, and turns bad input into one
line on stderr with exit code 2. Stage modules compose tasks (tasks/) and never import each other;
the paths below are the only place a stage's inputs and outputs are named.
"""
from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable

import tasks  # environment first: telemetry off before Prefect is imported

DATA, METRICS, REPORTS = Path("data"), Path("metrics"), Path("reports")

# masked-LM track (SNKU paper): data -> finetune -> memorized -> statistics -> edit -> evaluate -> report
CORPUS = DATA / "corpus"
FINETUNED = DATA / "models" / "finetuned"
RETRAINED = DATA / "models" / "retrained"
MEMORIZED = DATA / "memorized"
STATS = {"activations": DATA / "activations", "attribution": DATA / "attribution", "clusters": DATA / "clusters",
         "ig": DATA / "ig"}  # one safetensors file per category each
EDITED = DATA / "edited"  # <method>/<category>/
MASKED_METRICS = {"finetune": METRICS / "finetune.json", "memorized": METRICS / "memorized.json",
                  "retrain": METRICS / "retrain.json", "methods": METRICS / "methods",
                  "experiments": METRICS / "experiments.json"}

# causal-LM track (NeuMuter paper)
CAUSAL = DATA / "causal"
CAUSAL_BASE, CAUSAL_CORPUS, CAUSAL_FINETUNED = CAUSAL / "base", CAUSAL / "corpus", CAUSAL / "finetuned"
CAUSAL_MEMORIZED, CAUSAL_RETRAINED, NEIGHBOURS = CAUSAL / "memorized", CAUSAL / "retrained", CAUSAL / "neighbours"
UNLEARNED = CAUSAL / "unlearned"  # <method>/
CAUSAL_METRICS = METRICS / "causal"

# benchmark track (TOFU, LUME)
BENCH = DATA / "bench"
BENCH_SETS = BENCH / "sets"  # <suite>/train.jsonl, <run>/{forget,retain,reference}.jsonl, <run>/eval.json
BENCH_METRICS = METRICS / "bench"  # <suite>/finetune.json, <run>/{original,reference,<method>}.json


def bench_finetuned(suite: str) -> Path:
    """The suite's fine-tuned model (forget + retain)."""
    return BENCH / suite / "finetuned"


def bench_reference_model(run: str) -> Path:
    """The run's reference model: the same recipe without the run's forget set."""
    return BENCH / run / "reference"


def bench_prepared(run: str) -> Path:
    """The run's stop thresholds and NeuMuter neighbours."""
    return BENCH / run / "prepared"


def params_path() -> str:
    """params.yaml, or the file named by $UNLEARN_PARAMS (used by tests and presets)."""
    return os.environ.get("UNLEARN_PARAMS", "params.yaml")


def input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a one-line message, exit 2), not a bug."""
    return (ValueError, FileNotFoundError, KeyError)


def main(flow: Callable[..., Any], check: Callable[..., Any] | None = None) -> None:
    """Run a stage from the command line: `python -m flows.<stage> [args]` calls flow(*args, params_file).

    `check(*args, params_file)` validates what the stage reads (its params sections, its item) before the
    flow run starts: a failing flow run would make Prefect log a traceback.
    """
    names = [p for p in inspect.signature(getattr(flow, "fn", flow)).parameters if p != "params_file"]
    args = sys.argv[1:]
    if len(args) != len(names):
        usage = " ".join(f"<{n}>" for n in names)
        print(f"usage: python -m {sys.modules['__main__'].__spec__.name} {usage}".rstrip(), file=sys.stderr)
        sys.exit(2)
    try:
        tasks.use_compute(params_path())  # a bad or missing device / dtype fails here, before the flow run
        if check is not None:
            check(*args, params_path())
        run = flow.with_options(task_runner=tasks.task_runner()) if hasattr(flow, "with_options") else flow
        run(*args, params_path())
    except input_errors() as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
