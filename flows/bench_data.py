"""The bench_data stage's body: every suite's fine-tuning pairs and every run's forget / retain / reference / eval sets.

Files (data/bench/sets/, a DVC output; they hold forget-set text, so they never go to git or MLflow):
  <suite>/train.jsonl            {"id", "prompt", "answer"}: what the suite's model is fine-tuned on
  <run>/forget.jsonl             D_f, the pairs unlearned
  <run>/retain.jsonl             D_r, the retain pairs methods with a retain term read (fine-tuned on)
  <run>/reference.jsonl          the reference model's training pairs (train minus D_f)
  <run>/eval.json                the suite's evaluation sets (TOFU EvalSets / LUME member and non-member rows)
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable

from flows.bench_bag import SETS
from lib.bench import lume, tofu
from lib.io import write_json, write_jsonl
from lib.params import BenchmarksParams, run_suite


def _pairs(prefix: str, prompts: Iterable[str], answers: Iterable[str]) -> list[dict[str, str]]:
    """Rows {"id", "prompt", "answer"} numbered in order."""
    return [{"id": f"{prefix}-{i}", "prompt": p, "answer": a} for i, (p, a) in enumerate(zip(prompts, answers))]


def _tofu_pairs(prefix: str, rows: list[dict]) -> list[dict[str, str]]:
    """TOFU QA rows as prompt/answer pairs."""
    return _pairs(prefix, (tofu.tofu_prompt(r["question"]) for r in rows), (r["answer"] for r in rows))


def _lume_pairs(prefix: str, rows: Iterable[dict]) -> list[dict[str, str]]:
    """LUME rows as prompt/answer pairs (the QA template or the completion prefix)."""
    rows = list(rows)
    return _pairs(prefix, (lume.prompt(r) for r in rows), (r["output"] for r in rows))


def _tofu(bench: BenchmarksParams, runs: list[str]) -> dict[str, Any]:
    """TOFU: one fine-tuning set for every requested forget split, per run its sets."""
    tp = bench.tofu
    splits = [run_suite(r)[1] for r in runs]
    sets = tofu.load_sets(bench.data_root, splits, tp.n_retain_authors, tp.n_retain_eval, tp.n_real_authors,
                          tp.n_world_facts, tp.hub)
    write_jsonl(SETS / "tofu" / "train.jsonl", _tofu_pairs("tofu", sets.finetune))
    forget_questions = {r["question"] for rows in sets.forget.values() for r in rows}
    retain = [r for r in sets.finetune if r["question"] not in forget_questions]
    for run, split in zip(runs, splits):
        write_jsonl(SETS / run / "forget.jsonl", _tofu_pairs(f"{run}-forget", sets.forget[split]))
        write_jsonl(SETS / run / "retain.jsonl", _tofu_pairs(f"{run}-retain", retain))
        write_jsonl(SETS / run / "reference.jsonl", _tofu_pairs(f"{run}-reference", sets.reference[split]))
        write_json(SETS / run / "eval.json", asdict(sets.for_split(split)))
    return {"tofu_train": len(sets.finetune), "tofu_retain_authors": sets.n_retain_authors,
            **{f"{run}_forget": len(sets.forget[s]) for run, s in zip(runs, splits)}}


def _lume(bench: BenchmarksParams) -> dict[str, Any]:
    """LUME: stratified forget and retain subsets, a tenth of each held out as non-members."""
    lp = bench.lume
    forget = lume.select(lume.load_split("forget", bench.data_root, lp.hub), lp.n_forget, lp.holdout_fraction, lp.seed)
    retain = lume.select(lume.load_split("retain", bench.data_root, lp.hub), lp.n_retain, lp.holdout_fraction,
                         lp.seed + 1)
    write_jsonl(SETS / "lume" / "train.jsonl", _lume_pairs("lume", forget.members + retain.members))
    write_jsonl(SETS / "lume" / "forget.jsonl", _lume_pairs("lume-forget", forget.members))
    write_jsonl(SETS / "lume" / "retain.jsonl", _lume_pairs("lume-retain", retain.members))
    write_jsonl(SETS / "lume" / "reference.jsonl", _lume_pairs("lume-reference", retain.members))
    write_json(SETS / "lume" / "eval.json", {name: {"members": list(sub.members), "non_members": list(sub.non_members)}
                                             for name, sub in (("forget", forget), ("retain", retain))})
    return {"lume_forget_members": len(forget.members), "lume_forget_non_members": len(forget.non_members),
            "lume_retain_members": len(retain.members), "lume_retain_non_members": len(retain.non_members)}


def write_sets(bench: BenchmarksParams) -> dict[str, Any]:
    """Write every suite's and run's sets; return their sizes (also written to sets/stats.json)."""
    tofu_runs = [r for r in bench.runs if run_suite(r)[0] == "tofu"]
    stats: dict[str, Any] = {}
    if "tofu" in bench.suites:
        if not tofu_runs:
            raise ValueError("benchmarks.suites lists tofu but benchmarks.runs has no tofu_<split> run")
        stats |= _tofu(bench, tofu_runs)
    if "lume" in bench.suites:
        stats |= _lume(bench)
    write_json(SETS / "stats.json", stats)
    return stats
