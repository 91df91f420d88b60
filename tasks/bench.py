"""Prefect tasks of the benchmark track (thin wrappers; the scoring itself lives in lib.bench)."""
from __future__ import annotations

from typing import Any

from prefect import task

from lib.bench.suites import evaluate
from tasks.common import cached_task_options


@task(name="bench-score", task_run_name="score-{suite}", **cached_task_options())
def score_task(model: Any, tokenizer: Any, suite: str, sets: Any, max_len: int, max_new: int, batch_size: int,
               cache_token: str) -> dict[str, Any]:
    """A model's benchmark scores, cached by the caller's content token (weights, sets, params, code)."""
    return evaluate(suite, model, tokenizer, sets, max_len, max_new, batch_size)
