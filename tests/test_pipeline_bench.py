"""End-to-end tests of the benchmark track (TOFU and LUME on the tiny LLaMA; DVC + Prefect + MLflow, nothing
mocked) in a tiny repo of its own: one cold `dvc repro bench_report`, which xdist runs beside tests/test_pipeline.py's
cold run of the other two tracks. Read-only checks first, then the SIGKILL rerun; the privacy check runs last.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_checks import (STAGE_LINE, Pipeline, kill_and_rerun, leaked_in, mlflow_runs, produced_texts,
                                   start_pipeline, tail)

pytestmark = pytest.mark.integration

BENCH_RUNS, BENCH_METHODS = ("tofu_forget01", "lume"), ("ga", "simu", "sp")  # tests/pipeline_repo.tiny_bench
BENCH_STAGES = {"causal_base", "bench_data", "bench_finetune@tofu", "bench_finetune@lume", "bench_report",
                *(f"{stage}@{r}" for stage in ("bench_reference", "bench_prepare") for r in BENCH_RUNS),
                *(f"bench_unlearn@{r}-{m}" for r in BENCH_RUNS for m in BENCH_METHODS)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Pipeline:
    """A tiny git+DVC repo after one cold `dvc repro bench_report` against the session's Prefect server."""
    return start_pipeline(tmp_path_factory.mktemp("bench") / "repo", prefect_api_url, "bench_report")


def test_cold_repro_runs_every_benchmark_stage_and_a_second_runs_none(bench: Pipeline) -> None:
    """The cold run runs each benchmark stage once and the base model they start from (no other stage of the causal
    track); nothing changed, a second runs none."""
    result = bench.cold
    assert result is not None and result.returncode == 0, f"cold dvc repro failed:\n{tail(result)}"
    assert set(STAGE_LINE.findall(result.stdout)) == BENCH_STAGES
    _, ran = bench.repro()
    assert ran == set(), f"stages re-ran without a change: {sorted(ran)}"
    print(f"cold dvc repro bench_report: {bench.cold_seconds:.1f} s")


def test_benchmarks_report_every_method_with_its_n(bench: Pipeline) -> None:
    """Each benchmark run scores the original, the reference and every method; finite numbers and N in the report."""
    repo = bench.repo
    report = (repo / "reports/bench/results.md").read_text()
    assert "nan" not in report.lower() and "N (QA per set): Forget 40" in report
    for run_name in BENCH_RUNS:
        thresholds = json.loads((repo / f"data/bench/{run_name}/prepared/thresholds.json").read_text())
        assert 0.0 <= thresholds["ma"] <= 1.0
        for name in BENCH_METHODS:
            out = json.loads((repo / f"metrics/bench/{run_name}/{name}.json").read_text())
            assert out["method"] == name and out["run"] == run_name and out["seconds"] > 0
            numbers = [v for v in json.dumps(out["scores"]).replace(",", " ").split() if v[:1].isdigit()]
            assert numbers and "NaN" not in json.dumps(out["scores"])
    tofu = json.loads((repo / "metrics/bench/tofu_forget01/original.json").read_text())
    assert tofu["forget"]["n"] == 40 and 0.0 <= tofu["forget_quality"] <= 1.0
    reference = json.loads((repo / "metrics/bench/tofu_forget01/reference.json").read_text())
    assert reference["forget_quality"] == 1.0
    lume = json.loads((repo / "metrics/bench/lume/original.json").read_text())
    assert lume["mia"]["n_members"] > 0 and lume["mia"]["n_non_members"] > 0
    assert not (repo / "data/bench/tofu_forget01/unlearned").exists()  # scores are kept, edited weights are not


def test_mlflow_one_run_per_benchmark_run_and_method(bench: Pipeline) -> None:
    """Each unlearning of each benchmark run is one MLflow run, tagged with both."""
    runs = mlflow_runs(bench.repo)
    pairs = sorted((r.data.tags["benchmark"], r.data.tags["method"]) for r in runs
                   if r.data.tags.get("stage") == "bench_unlearn")
    assert pairs == sorted((b, m) for b in BENCH_RUNS for m in BENCH_METHODS)


def test_sigkill_of_an_unlearning_then_rerun_gives_the_same_outputs(bench: Pipeline, tmp_path: Path) -> None:
    """bench_unlearn killed (SIGKILL, whole process group) within its first seconds (DVC's start, the flow's
    imports or its run), then rerun: the outputs equal the uninterrupted run's, nothing left beside them."""
    seed, killed = kill_and_rerun(bench, ("bench_unlearn@lume-ga",), tmp_path, settle="bench_report",
                                  delays=(0.5, 4.0))
    assert killed == 1, f"KILL_SEED={seed}: the stage ended before the kill"


# --- privacy: last, so that it covers every run the module made ------------------------------------------

def bench_forget_answers(repo: Path) -> dict[str, str]:
    """Benchmark forget answers long enough to be specific (TOFU biographies, LUME PII and stories)."""
    rows = [json.loads(line) for path in (repo / "data/bench/sets").glob("*/forget.jsonl")
            for line in path.read_text().splitlines()]
    return {r["id"]: r["answer"] for r in rows if len(r["answer"]) >= 8}


def test_no_forget_answer_in_mlflow_metrics_reports_or_logs(bench: Pipeline) -> None:
    """No benchmark forget answer appears in MLflow (store, artifacts), metrics/, reports/, any process output or
    the Prefect database."""
    answers = bench_forget_answers(bench.repo)
    assert len(answers) >= 10 and bench.logs
    sets = "".join(p.read_text() for p in (bench.repo / "data/bench/sets").glob("*/forget.jsonl"))
    assert len(leaked_in({"forget sets": sets}, answers)) == len(answers)  # the matcher does find them
    assert not leaked_in(produced_texts(bench), answers)
