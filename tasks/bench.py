"""Prefect tasks of the benchmark track (thin wrappers; the scoring itself lives in the suite modules of lib.bench)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from lib.bench.qa import encode_pairs_file
from lib.bench.suites import SUITES, run_suite, suite
from lib.core.io import file_digest, json_digest, read_json
from tasks.parallel import TrainingSet
from tasks import cached_task_options, code_digest, load_model_task, make_token, save_model_task
from tasks.finetune import train_task


@task(name="bench-score", task_run_name="score-{name}", **cached_task_options())
def score_task(model: Any, tokenizer: Any, name: str, sets: Any, cfg: Any, batch_size: int,
               cache_token: str) -> dict[str, Any]:
    """A model's scores on a suite's sets, cached by the caller's content token (weights, sets, params, code)."""
    return suite(name).evaluate(model, tokenizer, sets, cfg, batch_size)


def eval_sets(sets_dir: Path, run: str) -> Any:
    """The run's evaluation sets."""
    return suite(run_suite(run)[0]).sets_from_json(read_json(sets_dir / run / "eval.json"))


def score_saved(path: Path, sets_dir: Path, run: str, cfg: Any, batch_size: int) -> dict[str, Any]:
    """Scores of a saved model on the run's sets, cached by its weights, the sets, the scoring params and code."""
    name = run_suite(run)[0]
    token = make_token(model=file_digest(path / "model.safetensors"), sets=file_digest(sets_dir / run / "eval.json"),
                       cfg=json_digest([cfg.max_len, cfg.max_new, batch_size]), code=code_digest(suite(name)))
    model, tokenizer = load_model_task(str(path), "causal")
    return score_task(model, tokenizer, name, eval_sets(sets_dir, run), cfg, batch_size, cache_token=token)


def suite_config(params: Any, run_or_suite: str) -> Any:
    """The Config of a run's (or a suite's) suite, from `benchmarks.<suite>`."""
    name = run_or_suite if run_or_suite in SUITES else run_suite(run_or_suite)[0]
    return params.get(f"benchmarks.{name}", suite(name).Config)


def train_pairs(base: Path, pairs_file: Path, cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Fine-tune the base causal LM on a pairs file (its suite's max_len and recipe), save it; its metrics."""
    model, tokenizer = load_model_task(str(base), "causal", float32=True)
    seqs = encode_pairs_file(tokenizer, pairs_file, cfg.max_len)
    log = train_task(model, tokenizer, TrainingSet.causal(seqs, tokenizer.pad_token_id), cfg.finetune,
                     desc="causal-lm")
    save_model_task(model, tokenizer, out_dir)
    return log.metrics(len(seqs))

