"""End-to-end tests of the benchmark track (TOFU and LUME on the tiny LLaMA; DVC + Prefect + MLflow, nothing
mocked) in a tiny repo of its own: one cold `dvc repro bench_report bench_attack bench_attack_reference
bench_calibrate` (LUME's models attacked: benchmarks.attack_runs [lume]; GA calibrated on both runs), which xdist runs
beside tests/test_pipeline.py's cold run of the other two tracks. Read-only checks first, then the SIGKILL rerun;
the privacy check runs last.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_checks import (STAGE_LINE, Pipeline, kill_and_rerun, leaked_in, mlflow_runs, produced_texts,
                                   start_pipeline, tail)

pytestmark = pytest.mark.integration

BENCH_RUNS, BENCH_METHODS = ("tofu_forget01", "lume"), ("ga", "simu", "sp")  # tests/pipeline_repo.tiny_bench
ATTACKED = ("original", *BENCH_METHODS, "retrain")  # LUME's models the attack stages read
BENCH_STAGES = {"causal_base", "bench_data", "bench_finetune@tofu", "bench_finetune@lume", "bench_report",
                *(f"{stage}@{r}" for stage in ("bench_reference", "bench_prepare") for r in BENCH_RUNS),
                *(f"bench_unlearn@{r}-{m}" for r in BENCH_RUNS for m in BENCH_METHODS),
                *(f"bench_attack@lume-{m}" for m in BENCH_METHODS),
                *(f"bench_attack_reference@lume-{m}" for m in ("original", "retrain")),
                *(f"bench_calibrate@{r}-ga" for r in BENCH_RUNS)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Pipeline:
    """A tiny git+DVC repo after one cold `dvc repro bench_report` against the session's Prefect server."""
    return start_pipeline(tmp_path_factory.mktemp("bench") / "repo", prefect_api_url, "bench_report", "bench_attack",
                          "bench_attack_reference", "bench_calibrate",
                          overrides={"benchmarks.attack_runs": ["lume"], "benchmarks.calibration.methods": ["ga"]})


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
    """Each unlearning of each benchmark run is one MLflow run, tagged with both; each attacked LUME model too."""
    runs = mlflow_runs(bench.repo)
    pairs = sorted((r.data.tags["benchmark"], r.data.tags["method"]) for r in runs
                   if r.data.tags.get("stage") == "bench_unlearn")
    assert pairs == sorted((b, m) for b in BENCH_RUNS for m in BENCH_METHODS)
    attacked = sorted(r.data.tags["method"] for r in runs
                      if r.data.tags.get("stage") == "attack" and r.data.tags.get("benchmark") == "lume")
    assert attacked == sorted(ATTACKED)


def test_every_lume_model_is_attacked_and_the_report_reads_them(bench: Pipeline,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each method's model is unlearned again by its attack stage with the scored run's outcome; every attack reports
    on every model; the robustness report's LUME section has a row and a verdict for each."""
    from flows.robustness_report import tracks
    from lib.reports.robustness import report

    for name in ATTACKED:
        out = json.loads((bench.repo / f"metrics/attacks/bench/lume/{name}.json").read_text())
        assert out["model"] == name and out["run"] == "lume" and out["n_forget"] > 0 and out["n_holdout"] > 0
        assert {"direct", "int8", "int4", "sampling", "logit_lens", "relearn", "relearn_unrelated", "mia"} <= set(out)
        assert 0.0 <= out["direct"]["span_ma"] <= 1.0 and "paraphrase" not in out
        if name in BENCH_METHODS:  # the same unlearning as the scored run's (same code, inputs, seed, machine)
            assert out["unlearning"]["same_as_scored"], out["unlearning"]
    original = json.loads((bench.repo / "metrics/attacks/bench/lume/original.json").read_text())
    retrain = json.loads((bench.repo / "metrics/attacks/bench/lume/retrain.json").read_text())
    assert original["direct"]["span_ma"] > retrain["direct"]["span_ma"] + 0.05  # the tiny model learned some of D_f
    monkeypatch.chdir(bench.repo)
    rows, _ = tracks([], [], {"lume": list(BENCH_METHODS)})
    assert list(rows) == ["Benchmark: LUME"] and list(rows["Benchmark: LUME"]) == list(ATTACKED)
    text = report(rows, 0.1)
    section = text.split("## Benchmark: LUME")[1]
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Model")]
    assert [line.split(" | ")[0][2:] for line in lines[:len(ATTACKED)]] == list(ATTACKED)
    assert "Benchmarks: the secret spans" in text and "nan" not in section.lower()


def test_each_run_calibrates_ga_and_the_report_has_a_section_per_run(bench: Pipeline) -> None:
    """GA's search on each benchmark run: its trials scored against the run's reference model, a point (reached or
    the nearest), an MLflow run with a child per trial; the calibration report gives each run a section."""
    from lib.reports.calibration import bench_key, report

    results: dict[str, dict] = {"ga": {"method": "ga"}}
    for run_name in BENCH_RUNS:
        out = json.loads((bench.repo / f"metrics/calibration/bench/{run_name}/ga.json").read_text())
        assert out["run"] == run_name and out["method"] == "ga" and out["metric"] == "ma"
        assert out["gap_before"] == pytest.approx(out["ma_before"] - out["ma_retrain"])
        if out["reached"] is not None:  # something to forget: the search ran its 2 trials
            assert len(out["trials"]) == 2 and out["best"] is not None and out["frontier"]
            assert all(t["gap_ratio"] is not None and t["valid_ppl"] > 0 for t in out["trials"])
        results["ga"][bench_key(run_name)] = out
    assert any(results["ga"][bench_key(r)]["reached"] is not None for r in BENCH_RUNS)  # the tiny model learned D_f
    text = report(results, [], "calibration.png")
    assert "## Benchmark LUME (MA of D_f)" in text and "## Benchmark tofu_forget01 (MA of D_f)" in text
    runs = [r for r in mlflow_runs(bench.repo) if r.data.tags.get("track") == "benchmarks"]
    searched = sorted(r for r in BENCH_RUNS if results["ga"][bench_key(r)]["reached"] is not None)
    assert sorted(r.data.tags["benchmark"] for r in runs if r.data.tags.get("stage") == "calibrate") == searched
    assert sum(r.data.tags.get("stage") == "calibrate_trial" for r in runs) == 2 * len(searched)


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
    """No benchmark forget answer appears in MLflow (store, artifacts), metrics/ (the attacks' included), reports/,
    any process output or the Prefect database."""
    answers = bench_forget_answers(bench.repo)
    assert len(answers) >= 10 and bench.logs
    sets = "".join(p.read_text() for p in (bench.repo / "data/bench/sets").glob("*/forget.jsonl"))
    assert len(leaked_in({"forget sets": sets}, answers)) == len(answers)  # the matcher does find them
    assert not leaked_in(produced_texts(bench), answers)
