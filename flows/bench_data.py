"""DVC stage `bench_data`: every suite's fine-tuning pairs and every run's forget / retain / reference / eval sets.

Files (data/bench/sets/, a DVC output; they hold forget-set text, so they never go to git or MLflow):
  <suite>/train.jsonl            {"id", "prompt", "answer"}: what the suite's model is fine-tuned on
  <run>/forget.jsonl             D_f, the pairs unlearned
  <run>/retain.jsonl             D_r, the retain pairs methods with a retain term read (fine-tuned on)
  <run>/reference.jsonl          the reference model's training pairs (train minus D_f)
  <run>/eval.json                the suite's evaluation sets
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows import BENCH_SETS, main
from lib.bench.suites import BenchConfig, run_suite, suite
from lib.core.io import write_json, write_jsonl
from lib.core.params import load_params


def runs() -> list[str]:
    """Modules the stage imports by name: every suite (read by the dvc.yaml deps generator)."""
    return [suite(name).__name__ for name in config("params.yaml")[0].suites]


def config(params_file: str) -> tuple[BenchConfig, dict[str, Any]]:
    """The stage's params: `benchmarks` and each listed suite's section, built by its Config."""
    params = load_params(params_file)
    bench = params.get("benchmarks", BenchConfig)
    return bench, {name: params.get(f"benchmarks.{name}", suite(name).Config) for name in bench.suites}


def build(bench: BenchConfig, configs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every suite's files (relative path -> rows or JSON) and sizes, built from TOFU / LUME."""
    files, stats = {}, {}
    for name, cfg in configs.items():
        runs_of = [r for r in bench.runs if run_suite(r)[0] == name]
        if not runs_of:
            raise ValueError(f"benchmarks.suites lists {name} but benchmarks.runs has no run of it")
        built, sizes = suite(name).build_files(cfg, bench.data_root, runs_of)
        files |= built
        stats |= sizes
    return files, stats


def check(params_file: str) -> tuple[BenchConfig, dict[str, Any]]:
    """The params and, with a local data_root, its files read and checked: bad input stops the stage before its flow
    run (the hub is read only by the flow)."""
    bench, configs = config(params_file)
    if bench.data_root is not None:
        build(bench, configs)
    return bench, configs


@flow(name="bench-data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Load TOFU / LUME (hub or data_root), cut the CPU subsets, write every run's sets (all built before any write)."""
    files, stats = build(*config(params_file))
    for rel, content in files.items():
        (write_jsonl if rel.endswith(".jsonl") else write_json)(BENCH_SETS / rel, content)
    write_json(BENCH_SETS / "stats.json", stats)
    return stats


if __name__ == "__main__":
    main(data_flow, check=check)
