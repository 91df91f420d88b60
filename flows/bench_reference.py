"""DVC stage `bench_reference@<run>`: the run's reference, the same recipe without its forget set (TOFU's retain99...)."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows import BENCH_METRICS, BENCH_SETS, CAUSAL_BASE, bench_reference_model, main
from lib.bench.suites import run_suite, suite
from lib.core.io import write_json
from lib.core.params import load_params
from tasks import use_compute
from tasks.bench import suite_config, train_pairs


def runs(run: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [suite(run_suite(run)[0]).__name__]


def config(run: str, params_file: str) -> Any:
    """The stage's params: the run's suite section."""
    return suite_config(load_params(params_file), run)


@flow(name="bench-reference")
def reference_flow(run: str, params_file: str = "params.yaml") -> dict:
    """The run's reference: the suite's recipe on its training set minus the run's forget set."""
    use_compute(params_file)
    metrics = train_pairs(CAUSAL_BASE, BENCH_SETS / run / "reference.jsonl", config(run, params_file),
                             bench_reference_model(run))
    write_json(BENCH_METRICS / run / "reference_train.json", metrics)
    return metrics


if __name__ == "__main__":
    main(reference_flow, check=config)
