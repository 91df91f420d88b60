"""Scoring shared by bench_prepare and bench_unlearn: a model on a run's evaluation sets, flattened for MLflow."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lib.bench.lume
import lib.bench.qa
import lib.bench.text
import lib.bench.tofu
from flows.bench_bag import METRICS, SETS
from lib.bench import lume, tofu
from lib.bench.suites import evaluate, sets_from_json
from lib.io import file_digest, json_digest, read_json
from lib.params import BenchmarksParams, run_suite
from tasks.bench import score_task
from tasks.causal import load_causal_task
from tasks.common import code_digest, make_token


def eval_sets(run: str) -> Any:
    """The run's evaluation sets (TOFU EvalSets / LUME Subsets)."""
    return sets_from_json(run_suite(run)[0], read_json(SETS / run / "eval.json"))


def evaluate_loaded(model, tokenizer, run: str, bench: BenchmarksParams) -> dict[str, Any]:
    """Every score of the run's suite for one in-memory model (not cached: an unlearned model is never reused)."""
    suite = run_suite(run)[0]
    sp = getattr(bench, suite)
    return evaluate(suite, model, tokenizer, eval_sets(run), sp.max_len, sp.max_new, bench.batch_size)


def with_reference(scores: dict[str, Any], run: str) -> dict[str, Any]:
    """TOFU: add forget quality against the reference model's forget truth ratios (LUME: unchanged)."""
    if run_suite(run)[0] != "tofu":
        return scores
    return tofu.with_forget_quality(scores, read_json(METRICS / run / "reference.json")["forget_truth_ratios"])


def with_reference_self(scores: dict[str, Any], run: str) -> dict[str, Any]:
    """The reference model's own scores: TOFU forget quality against itself (1.0 by definition of the KS test)."""
    if run_suite(run)[0] != "tofu":
        return scores
    return tofu.with_forget_quality(scores, scores["forget_truth_ratios"])


def score_model(path: Path, run: str, bench: BenchmarksParams) -> dict[str, Any]:
    """Scores of a saved model, cached by its weights, the eval sets, the scoring params and code."""
    sp = getattr(bench, run_suite(run)[0])
    token = make_token(model=file_digest(path / "model.safetensors"), sets=file_digest(SETS / run / "eval.json"),
                       cfg=json_digest([sp.max_len, sp.max_new, bench.batch_size]),
                       code=code_digest(lib.bench.tofu, lib.bench.lume, lib.bench.qa, lib.bench.text))
    model, tokenizer = load_causal_task(str(path))
    return score_task(model, tokenizer, run_suite(run)[0], eval_sets(run), sp.max_len, sp.max_new, bench.batch_size,
                      cache_token=token)


def _tofu_flat(s: dict[str, Any]) -> dict[str, float]:
    """TOFU scalars: prob / rouge / truth ratio per set, model utility, forget quality."""
    out = {f"{name}_{key}": s[name][key] for name in tofu.SET_NAMES for key in ("prob", "rouge", "truth_ratio")}
    out["model_utility"] = s["model_utility"]
    out["n_forget"] = s["forget"]["n"]
    if "forget_quality" in s:
        out["forget_quality"] = s["forget_quality"]
    return out


def _lume_flat(s: dict[str, Any]) -> dict[str, float | None]:
    """LUME scalars: regurgitation / knowledge of forget and retain overall and per task, MIA, aggregates."""
    out = {f"{side}_{group}_{metric}": s[side][group][metric]["mean"]
           for side in ("forget", "retain") for group in ("overall",) + lume.TASKS
           for metric in ("regurgitation", "knowledge")}
    return out | {"n_forget": s["mia"]["n_members"], "mia_auc": s["mia"]["auc"], "mia_official": s["mia"]["official"], "aggregate": s["aggregate"],
                  "official_task_aggregate": s["official_task_aggregate"]}


def flat(scores: dict[str, Any], run: str) -> dict[str, float]:
    """The run's scalar scores (None values dropped) for MLflow and the report."""
    values = _tofu_flat(scores) if run_suite(run)[0] == "tofu" else _lume_flat(scores)
    return {k: float(v) for k, v in values.items() if v is not None}
