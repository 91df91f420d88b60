"""DVC stage `bench_finetune@<suite>`: the base causal LM fine-tuned on the suite's training pairs (forget + retain)."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows import BENCH_METRICS, BENCH_SETS, CAUSAL_BASE, bench_finetuned, main
from lib.bench.suites import check_suite, suite
from lib.core.io import write_json
from lib.core.params import load_params
from tasks import use_compute
from tasks.bench import suite_config, train_pairs


def runs(name: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [suite(name).__name__]


def config(name: str, params_file: str) -> Any:
    """The stage's params: `benchmarks.<suite>`."""
    return suite_config(load_params(params_file), check_suite(name))


@flow(name="bench-finetune")
def finetune_flow(name: str, params_file: str = "params.yaml") -> dict:
    """Fine-tune the base model on the suite's full training set (forget + retain)."""
    use_compute(params_file)
    metrics = train_pairs(CAUSAL_BASE, BENCH_SETS / name / "train.jsonl", config(name, params_file),
                             bench_finetuned(name))
    write_json(BENCH_METRICS / name / "finetune.json", metrics)
    return metrics


if __name__ == "__main__":
    main(finetune_flow, check=config)
