"""Entry-point helper: run one stage flow, turning bad input into a one-line error."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import tasks.common  # noqa: F401  (environment first)
from lib.params import ParamsError, load_params


def params_path() -> str:
    """params.yaml, or the file named by $UNLEARN_PARAMS (used by tests and presets)."""
    return os.environ.get("UNLEARN_PARAMS", "params.yaml")


def run_stage(flow: Callable[..., Any], *args: Any, check: Callable[[], Any] | None = None) -> None:
    """Run `flow(*args)`; known input errors exit 2 with one line naming the problem."""
    try:
        # validate before the flow run starts: a failing flow run makes Prefect log a traceback
        load_params(params_path())
        if check is not None:
            check()
        flow(*args)
    except (ParamsError, ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
