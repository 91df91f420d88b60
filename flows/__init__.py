"""The pipeline's stages: where each one reads and writes, and the one way to run a stage.

Every DVC stage runs `python -m flows.<stage> [item]`: the module's one flow, through `main`, which
reads its arguments, validates what the stage reads before any work, and turns bad input into one
line on stderr with exit code 2. Stage modules compose tasks (tasks/) and never import each other;
the paths below are the only place a stage's inputs and outputs are named.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import tasks  # environment first: telemetry off before Prefect is imported
import prefect
from lib.core import outputs
from lib.core.io import InputError
from lib.core.params import ParamsError
from safetensors import SafetensorError

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
    """Errors that mean bad input (a one-line message, exit 2), not a bug: lib's InputError and ParamsError (both
    ValueErrors, as are JSON and UTF-8 decode errors), a missing key, any OSError (a missing, unreadable or unwritable
    file or folder, the hub), a damaged archive or safetensors file."""
    return (ValueError, KeyError, OSError, tarfile.TarError, SafetensorError)


def error_line(err: BaseException) -> str:
    """The one line `main` prints for an input error; a decode error's bytes never reach it."""
    if isinstance(err, UnicodeDecodeError):  # its str quotes a byte of the file: say where, not what
        text = f"input is not {err.encoding} (byte offset {err.start}); allowed: UTF-8 text"
    elif isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# input errors whose traceback says nothing the message does not (a plain ValueError may be a bug: it keeps its own)
QUIET = (InputError, ParamsError, OSError, UnicodeDecodeError, json.JSONDecodeError, tarfile.TarError, SafetensorError)


class _QuietInputErrors(logging.Filter):
    """Drop the traceback from Prefect's failed-run records of an input error: its message says all, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record; strip its traceback when it carries an input error."""
        if record.exc_info and isinstance(record.exc_info[1], QUIET):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_input_errors() -> None:
    """Install _QuietInputErrors on the loggers of flow and task runs (records reach the console and the API
    through them)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietInputErrors) for f in logger.filters):
            logger.addFilter(_QuietInputErrors())


def main(flow: Callable[..., Any], check: Callable[..., Any] | None = None) -> None:
    """Run a stage from the command line: `python -m flows.<stage> [args]` calls flow(*args, params_file).

    `check(*args, params_file)` validates what the stage reads (its params sections, its item, the user's files it
    loads) before the flow run starts: a failing flow run makes Prefect log the run (its traceback too, except for
    input errors). Every input error ends the process with one line on stderr and exit code 2.
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
            check(*args, params_path())  # reads the stage's own inputs: bad ones stop it before Prefect logs anything
        quiet_input_errors()
        run = flow.with_options(task_runner=tasks.task_runner()) if hasattr(flow, "with_options") else flow
        with kept_outputs(sys.modules["__main__"].__spec__.name, args), prefect.tags(*run_tags()):
            run(*args, params_path())
    except input_errors() as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        sys.exit(2)


def stage_name(flow: str, parameters: dict[str, Any]) -> str:
    """A stage as DVC names it, `flow-name arg1 arg2`, from a flow run's flow name and string arguments (the
    foreach item), without the params file."""
    args = [str(v) for k, v in parameters.items() if k != "params_file" and isinstance(v, (str, int))]
    return " ".join([flow, *args])


RUN_TAG_ENV = "UNLEARN_RUN_TAG"  # set by flows/serve.py for the `dvc exp run` of a deployment run


def run_tags() -> list[str]:
    """Tags of the stage's flow run: the Prefect deployment run that started `dvc exp run` names itself in
    $UNLEARN_RUN_TAG (flows/serve.py), so its page can list and link the stage runs."""
    tag = os.environ.get(RUN_TAG_ENV, "").strip()
    return [tag] if tag else []


@contextlib.contextmanager
def kept_outputs(module: str, args: list[str]) -> Iterator[None]:
    """Run a stage with its previous outputs (dvc.lock's, for this command) aside: dropped when it succeeds, put back
    when it fails or is interrupted; a killed earlier run's asides are put back first, and other stages' killed runs
    settled (lib.core.outputs)."""
    by_command = outputs.outputs_by_command(Path("dvc.lock"))
    command = " ".join(["python", "-m", module, *args])
    outs = by_command.get(command, [])
    outputs.settle([o for cmd, paths in by_command.items() if cmd != command for o in paths])  # other stages'
    outputs.recover(outs)
    outputs.set_aside(outs)
    try:
        yield
    except BaseException:
        outputs.roll_back(outs)
        raise
    outputs.commit(outs)
