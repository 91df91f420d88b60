"""End-to-end tests of the real pipeline (DVC + Prefect + MLflow, nothing mocked) on a tiny repo.

One module-scoped repo gets one cold `dvc repro` of the masked and causal tracks with their attacks and
calibrations (the benchmark track: tests/test_pipeline_bench.py, its own repo, so that xdist runs the two cold
runs side by side); the read-only checks come first, then
the tests that mutate params.yaml and re-run, in file order. The privacy check runs last
so that it covers the output of every run the module made.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from lib.core.io import file_digest
from lib.core.metrics import forget_gap
from lib.core.outputs import aside_of
from tests.pipeline_checks import (STAGE_LINE, Pipeline, kill_and_rerun, leaked_in, leftovers, mlflow_runs,
                                   outputs_snapshot, produced_texts, start_pipeline, tail)
from tests.pipeline_repo import run, set_param

pytestmark = pytest.mark.integration

METHODS, CATEGORIES = ("ftm", "gare", "depn", "snku", "random"), ("TEL", "NAME", "RANDOM")  # pipeline_repo.tiny_params
CAUSAL_METHODS = ("neumuter", "ga", "snku", "ig")  # tests/pipeline_repo.tiny_causal
CALIBRATED = ("depn",)  # tests/pipeline_repo.tiny_params
CAUSAL_CALIBRATED = ("ga",)  # tests/pipeline_repo.tiny_causal
CAUSAL_SCALARS = ("ma", "el", "span_ma", "span_el", "mia_distance", "ppl_valid", "ppl_public")
TARGETS = ("report", "causal_report", "robustness_report", "calibration_report")  # all but the benchmark track
ALL_STAGES = {"data", "finetune", "retrain", "memorized", "activations", "attribution", "clustering", "ig",
              "experiments", "report", *(f"{stage}@{m}" for stage in ("edit", "evaluate") for m in METHODS),
              "causal_base", "causal_data", "causal_finetune", "causal_memorized", "causal_retrain",
              "causal_neighbours", "causal_report",
              *(f"{stage}@{m}" for stage in ("causal_unlearn", "causal_evaluate") for m in CAUSAL_METHODS),
              *(f"causal_attack@{m}" for m in CAUSAL_METHODS), "causal_attack_reference@original",
              "causal_attack_reference@retrain", *(f"masked_attack@{m}" for m in METHODS), "masked_attack_retrain",
              "robustness_report", *(f"calibrate@{m}" for m in CALIBRATED),
              *(f"causal_calibrate@{m}" for m in CAUSAL_CALIBRATED), "calibration_report"}
EXPERIMENTS = {"seeds", "budget", "noise", "decay", "scoring", "seesaw"}
EXPERIMENT_RUN = re.compile(r"Task run '((?:seeds|budget|noise|decay|scoring|seesaw)-[^']+)' - Finished in state (\w+)")
SHARED_METRICS = {"valid_ppl", "valid_ppl_before", "privacy", "privacy_before", "time_s",
                  "neurons_edited", "weights_edited_frac"}
N_FFN_NEURONS = 2 * 37  # tiny BERT of tests/tiny_models.py: 2 layers x d_ff 37
KILL_TIMEOUT_S, PREFECT_WAIT_S = 300.0, 60.0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Pipeline:
    """A tiny git+DVC repo after one cold `dvc repro` of TARGETS against the session's Prefect server."""
    return start_pipeline(tmp_path_factory.mktemp("pipeline") / "repo", prefect_api_url, *TARGETS)


@pytest.fixture()
def restore_params(pipeline: Pipeline) -> Iterator[None]:
    """Put params.yaml back as it was after the test."""
    saved = (pipeline.repo / "params.yaml").read_text()
    yield
    (pipeline.repo / "params.yaml").write_text(saved)


def secrets_of(repo: Path) -> dict[str, str]:
    """Record id -> planted secret string of the repo's corpus."""
    lines = (repo / "data/corpus/secrets.jsonl").read_text().splitlines()
    return {row["id"]: row["secret"] for row in map(json.loads, filter(None, lines))}


def causal_secrets_of(repo: Path) -> dict[str, str]:
    """Candidate id -> private string of the causal track's corpus."""
    lines = (repo / "data/causal/corpus/candidates.jsonl").read_text().splitlines()
    return {row["id"]: row["secret"] for row in map(json.loads, filter(None, lines)) if row["secret"]}


# --- 1-2: cold run and no-op rerun -------------------------------------------------------------

def test_cold_repro_builds_every_output(pipeline: Pipeline) -> None:
    """A cold `dvc repro` runs every stage and leaves every declared output, models as safetensors."""
    result = pipeline.cold
    assert result is not None and result.returncode == 0, f"cold dvc repro failed:\n{tail(result)}"
    assert set(STAGE_LINE.findall(result.stdout)) == ALL_STAGES
    repo = pipeline.repo
    expected = [repo / "reports/results.md", repo / "reports/results.csv", repo / "dvc.lock"]
    expected += [repo / f"metrics/methods/{m}.json" for m in METHODS]
    expected += [repo / f"data/edited/{m}/{c}/model.safetensors" for m in METHODS for c in CATEGORIES]
    missing = [str(p.relative_to(repo)) for p in expected if not p.is_file()]
    assert not missing, f"missing outputs: {missing}"
    finetuned = repo / "data/models/finetuned"
    assert (finetuned / "model.safetensors").is_file()
    assert not list(finetuned.glob("*.bin")) and not list(finetuned.glob("*.pt")), "pickle checkpoint written"
    from safetensors import safe_open

    with safe_open(str(finetuned / "model.safetensors"), framework="pt") as handle:
        assert any("intermediate" in key for key in handle.keys())
    assert {p.name for p in (repo / "reports/figures").glob("*.png")} >= {
        "budget_TEL.png", "noise_TEL.png", "decay_TEL.png", "scoring.png", "seesaw.png"}
    print(f"cold dvc repro: {pipeline.cold_seconds:.1f} s")


def test_stage_times_come_from_prefect_run_records(pipeline: Pipeline, tmp_path: Path) -> None:
    """tools.timings lists every stage of the cold run from Prefect's flow-run records, with a total."""
    out = tmp_path / "timings.md"
    root = Path(__file__).resolve().parents[1]
    result = run([sys.executable, "-m", "tools.timings", "--since", pipeline.started, "--out", str(out)], root,
                 pipeline.env, check=False)
    assert result.returncode == 0, tail(result)
    text = out.read_text()
    for stage in ("| finetune |", "| causal-finetune |", "| edit snku |", "| causal-unlearn neumuter |",
                  "| causal-attack ga |"):
        assert stage in text, (stage, text[:2000])
    assert re.search(r"\*\*total \(\d+ flow runs\)\*\*", text)
    tracks = dict(re.findall(r"^\| (masked LM|causal LM|benchmarks|attacks) \| (\d+) \|", text, re.M))
    assert set(tracks) == {"masked LM", "causal LM", "attacks"}, text[:800]  # benchmarks: the other repo
    assert all(int(n) > 3 for n in tracks.values())
    stages = int(re.search(r"\*\*total \((\d+) flow runs\)\*\*", text).group(1))
    assert sum(map(int, tracks.values())) == stages, text[:800]
    late = run([sys.executable, "-m", "tools.timings", "--since", "2999-01-01T00:00"], root, pipeline.env, check=False)
    assert late.returncode == 2 and "no completed flow run" in late.stderr and "Traceback" not in late.stderr


def test_retrain_reference_and_forget_gap(pipeline: Pipeline) -> None:
    """Retrain removed exactly the memorized secrets' samples; every method row has its forget gap."""
    repo = pipeline.repo
    memorized = json.loads((repo / "data/memorized/memorized.json").read_text())
    rows = [json.loads(line) for line in (repo / "data/corpus/secrets.jsonl").read_text().splitlines() if line]
    ids = {i for cat in CATEGORIES for i in memorized[cat]}
    retrain = json.loads((repo / "metrics/retrain.json").read_text())
    assert retrain["samples_removed"] == sum(r["repetitions"] for r in rows if r["id"] in ids)
    assert retrain["forgotten_secrets"] == len(ids)
    for method in METHODS:
        for cat, row in json.loads((repo / f"metrics/methods/{method}.json").read_text()).items():
            expected = forget_gap({"TEL": "exposure", "NAME": "mrr", "RANDOM": "random_ppl"}[cat],
                                  row["privacy"], row["retrain_privacy"])
            assert row["forget_gap"] == pytest.approx(expected), (method, cat)
    ftm = json.loads((repo / "metrics/methods/ftm.json").read_text())
    assert all(r["privacy"] == r["privacy_before"] and r["neurons_edited"] == 0 for r in ftm.values())


def test_experiments_cover_every_table_and_figure(pipeline: Pipeline) -> None:
    """metrics/experiments.json holds every experiment kind; seeds vary only seeded methods."""
    raw = json.loads((pipeline.repo / "metrics/experiments.json").read_text())
    records = raw["records"]
    assert all(set(s) == {"run", "reason"} for s in raw["skipped"])
    assert {r["experiment"] for r in records} == EXPERIMENTS
    seeds = [r for r in records if r["experiment"] == "seeds"]
    assert {(r["method"], r["category"], r["seed"]) for r in seeds} == {
        (m, c, s) for m in METHODS for c in CATEGORIES for s in (0, 1)}
    by = {(r["method"], r["category"], r["seed"]): r for r in seeds}
    for c in CATEGORIES:  # FTM and DEPN ignore the seed; Random-K draws other neurons
        assert by[("ftm", c, 0)]["privacy"] == by[("ftm", c, 1)]["privacy"] == by[("ftm", c, 0)]["privacy_before"]
        assert by[("depn", c, 0)]["privacy"] == by[("depn", c, 1)]["privacy"]
    assert any(by[("random", c, 0)]["privacy"] != by[("random", c, 1)]["privacy"] for c in CATEGORIES)
    seesaw = [r for r in records if r["experiment"] == "seesaw"]
    assert seesaw and all(r["kept_privacy"] is not None and r["kept_privacy_before"] is not None for r in seesaw)
    budget = {(r["method"], r["category"], r["k"]) for r in records if r["experiment"] == "budget"}
    assert ("snku", "TEL", 3) in budget and ("depn", "TEL", 3) in budget


def test_second_repro_runs_no_stage(pipeline: Pipeline) -> None:
    """Nothing changed, so a second `dvc repro` executes no stage."""
    result, ran = pipeline.repro()
    assert ran == set(), f"stages re-ran without a change: {sorted(ran)}"
    assert "Running stage" not in result.stdout + result.stderr


# --- 6: MLflow (before any rerun adds runs) ----------------------------------------------------

def test_mlflow_one_run_per_method_and_category(pipeline: Pipeline) -> None:
    """One evaluate run per method x category, each tagged, all with the same metric names."""
    everything = mlflow_runs(pipeline.repo)
    runs = [r for r in everything if r.data.tags.get("stage") == "evaluate"]
    causal = sorted(r.data.tags["method"] for r in everything if r.data.tags.get("stage") == "causal_evaluate")
    assert causal == sorted(CAUSAL_METHODS)
    experiments = [r for r in everything if r.data.tags.get("stage") == "experiments"]
    assert {r.data.tags["experiment"] for r in experiments} == EXPERIMENTS
    assert len({frozenset(r.data.metrics) for r in experiments if r.data.tags["experiment"] != "seesaw"}) == 1
    pairs = sorted((r.data.tags.get("method"), r.data.tags.get("category")) for r in runs)
    assert pairs == sorted((m, c) for m in METHODS for c in CATEGORIES)
    head = run(["git", "rev-parse", "HEAD"], pipeline.repo).stdout.strip()
    for r in runs:
        tags = r.data.tags
        assert tags["git_sha"] == head and tags["stage"] == "evaluate"
        assert tags["privacy_metric"] == {"TEL": "exposure", "NAME": "mrr", "RANDOM": "random_ppl"}[tags["category"]]
        assert re.fullmatch(r"[0-9a-f]{8,}", tags["params_hash"]), tags["params_hash"]
    names = {frozenset(r.data.metrics) for r in runs}
    assert len(names) == 1, f"metric names differ between runs: {[sorted(n) for n in names]}"
    assert SHARED_METRICS <= set(next(iter(names)))
    # params_hash fingerprints what the stage read: one per method, the same for its three categories
    hashes = {(r.data.tags["method"], r.data.tags["params_hash"]) for r in runs}
    assert len(hashes) == len(METHODS), f"one params.yaml, yet a method has several params hashes: {hashes}"


# --- 3-4: param changes rerun only what depends on them --------------------------------------

def test_edit_param_reruns_only_its_method(pipeline: Pipeline) -> None:
    """A TEL sigma of SNKU reruns edit@snku, evaluate@snku and report only; TEL alone changes."""
    repo = pipeline.repo
    finetuned = file_digest(repo / "data/models/finetuned")
    edited = {c: file_digest(repo / f"data/edited/snku/{c}/model.safetensors") for c in CATEGORIES}
    old = yaml.safe_load((repo / "params.yaml").read_text())["methods"]["snku"]["by_category"]["TEL"]["sigma"]
    set_param(repo, "methods.snku.by_category.TEL.sigma", old * 2)
    result, ran = pipeline.repro()
    assert ran == {"edit@snku", "evaluate@snku", "experiments", "report", "masked_attack@snku", "robustness_report"}
    runs = EXPERIMENT_RUN.findall(result.stdout + result.stderr)
    recomputed = {label.split("-")[1] for label, state in runs if state != "Cached"}
    assert runs and recomputed == {"snku"}, f"experiment runs recomputed for {recomputed}"
    assert file_digest(repo / "data/models/finetuned") == finetuned, "fine-tuned checkpoint changed"
    after = {c: file_digest(repo / f"data/edited/snku/{c}/model.safetensors") for c in CATEGORIES}
    assert after["TEL"] != edited["TEL"], "new sigma did not change the TEL edit"
    # seeded edits: categories whose params did not change come out byte-identical
    assert after["NAME"] == edited["NAME"] and after["RANDOM"] == edited["RANDOM"]


def test_clustering_threshold_reruns_clustering_only_upstream(pipeline: Pipeline) -> None:
    """A new clustering threshold reruns clustering, not activations or attribution (the stages downstream of
    clustering are left out: test_edit_param_reruns_only_its_method covers what a param reruns downstream)."""
    set_param(pipeline.repo, "clustering.threshold", 0.5)
    _, ran = pipeline.repro("clustering")
    assert "clustering" in ran
    assert not ran & {"data", "finetune", "memorized", "activations", "attribution"}, sorted(ran)


# --- 5: SIGKILL half-way through attribution, then resume -------------------------------------

def attribution_records(repo: Path) -> set[str]:
    """Names of the persisted Prefect result records of attribution shards (the cache)."""
    folder = repo / ".cache/prefect-results"
    return {p.name for p in folder.glob("attribution-shard-*")} if folder.is_dir() else set()


def start_attribution(pipeline: Pipeline, log: Path) -> subprocess.Popen:
    """`python -m flows.attribution` in its own process group, output to `log`."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **pipeline.env}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.attribution"], cwd=pipeline.repo,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_after_shards(pipeline: Pipeline, before: set[str], minimum: int, log: Path) -> int:
    """Start attribution, SIGKILL its process group once `minimum` new shards are cached."""
    proc = start_attribution(pipeline, log)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while len(attribution_records(pipeline.repo) - before) < minimum:
            assert proc.poll() is None, f"attribution ended (rc {proc.returncode}) before the kill"
            assert time.monotonic() < deadline, "attribution made no progress"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pipeline.logs.append(log.read_text(errors="replace"))
    assert proc.returncode == -signal.SIGKILL
    return len(attribution_records(pipeline.repo) - before)


def fresh_attribution(repo: Path, shard_size: int) -> tuple[dict[str, torch.Tensor], int]:
    """Uncached Grad x Act of each category's whole bag, and the number of shards it makes."""
    from lib.core.adapter import FFNAdapter
    from lib.core.attribution import grad_x_act
    from lib.core.models import load_model
    from lib.data.records import read_secrets
    from lib.families.masked import secret_token_rows

    params = yaml.safe_load((repo / "params.yaml").read_text())
    model, tokenizer = load_model(str(repo / "data/models/finetuned"), "masked")
    adapter = FFNAdapter.for_model(model)
    by_id = {s.id: s for s in read_secrets(repo / "data/corpus/secrets.jsonl")}
    memorized = json.loads((repo / "data/memorized/memorized.json").read_text())
    out, n_shards = {}, 0
    for cat in params["pipeline"]["categories"]:
        rows = secret_token_rows(tokenizer, [by_id[i] for i in memorized[cat]], params["memorized"]["max_len"])
        out[cat] = grad_x_act(model, adapter, rows.input_ids, rows.attention_mask, rows.positions, rows.gold_ids)
        n_shards += -(-len(rows) // shard_size)
    return out, n_shards


def latest_attribution_task_states(api_url: str, n_expected: int) -> list[str]:
    """State names of the attribution-* task runs of the newest 'attribution' flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + PREFECT_WAIT_S
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while True:  # task-run states reach the server as events, a little after the process exits
            flow_run = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["attribution"])),
                                             sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            states = [t.state_name for t in task_runs if t.name.startswith("attribution-")]
            settled = flow_run.state_name == "Completed" and all(s in ("Cached", "Completed") for s in states)
            if (settled and len(states) >= n_expected) or time.monotonic() > deadline:
                return states
            time.sleep(1.0)


def test_killed_attribution_resumes_from_cached_shards(pipeline: Pipeline, prefect_api_url: str,
                                                       tmp_path: Path, restore_params: None) -> None:
    """SIGKILL mid-stage; the rerun is Cached for finished shards, Completed for the rest only."""
    repo = pipeline.repo
    set_param(repo, "attribution.shard_size", 1)
    fresh, n_shards = fresh_attribution(repo, shard_size=1)
    outputs = file_digest(repo / "data/attribution")
    done = kill_after_shards(pipeline, attribution_records(repo), minimum=2, log=tmp_path / "killed.log")
    assert 2 <= done < n_shards, f"{done} of {n_shards} shards cached at the kill"
    print(f"SIGKILL after {done} of {n_shards} shards")
    kept = repo / "data/attribution"  # a killed run leaves its outputs aside; its next start puts them back
    assert file_digest(kept if kept.exists() else aside_of(kept)) == outputs, "killed run lost the stage outputs"
    result = pipeline.run(sys.executable, "-m", "flows.attribution")
    assert result.returncode == 0, tail(result)
    states = latest_attribution_task_states(prefect_api_url, n_shards)
    cached, completed = states.count("Cached"), states.count("Completed")
    assert (cached, completed) == (done, n_shards - done), f"states {sorted(set(states))}, {len(states)} runs"
    assert cached + completed == n_shards == len(states)
    from lib.core.io import load_tensors

    for cat, expected in fresh.items():
        got = load_tensors(repo / f"data/attribution/{cat}.safetensors")["attribution"]  # (L, d_ff)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max())), cat


# --- 5b: atomic outputs: a failed stage keeps its previous outputs, a killed one reruns to the same ----------

KILLED_STAGES = ("finetune", "edit@snku", "causal_unlearn@ga", "causal_evaluate@ga")  # bench: test_pipeline_bench


def test_failed_dvc_repro_keeps_the_previous_outputs(pipeline: Pipeline, restore_params: None) -> None:
    """Under `dvc repro` (which would delete a stage's outputs first, were they not persist), a stage that fails
    leaves its previous outputs as they were, with no aside or temporary sibling."""
    before = outputs_snapshot(pipeline.repo, "edit@snku")
    set_param(pipeline.repo, "methods.snku.k", N_FFN_NEURONS + 1)
    result = pipeline.run("dvc", "repro", "-s", "edit@snku")
    assert result.returncode != 0, tail(result)
    assert outputs_snapshot(pipeline.repo, "edit@snku") == before
    assert leftovers(pipeline.repo, "edit@snku") == []


def test_sigkill_at_a_random_point_then_rerun_gives_the_same_outputs(pipeline: Pipeline, tmp_path: Path) -> None:
    """Each stage template of the two tracks: `dvc repro -f -s` killed (SIGKILL, whole process group) at a random
    moment, then `dvc repro -s` finishes with outputs equal to the uninterrupted run's (durations aside)."""
    seed, killed = kill_and_rerun(pipeline, KILLED_STAGES, tmp_path, settle="causal_report")
    assert killed >= 2, f"KILL_SEED={seed}: only {killed} kills landed before the stage ended"


# --- 8: bad input ------------------------------------------------------------------------------

def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The non-empty lines a failed stage wrote to stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_unknown_param_key_exits_2(pipeline: Pipeline, restore_params: None) -> None:
    """An unknown key in a section the stage reads: exit 2, one stderr line naming the key."""
    set_param(pipeline.repo, "clustering.bogus_knob", 1)
    result = pipeline.run(sys.executable, "-m", "flows.clustering")
    assert result.returncode == 2, tail(result)
    lines = error_lines(result)
    assert len(lines) == 1 and "clustering.bogus_knob" in lines[0], lines


def test_non_numeric_param_exits_2(pipeline: Pipeline, restore_params: None) -> None:
    """A non-numeric learning rate: exit 2, one stderr line naming the key and the value."""
    set_param(pipeline.repo, "finetune.learning_rate", "abc")
    result = pipeline.run(sys.executable, "-m", "flows.finetune")
    assert result.returncode == 2, tail(result)
    lines = error_lines(result)
    assert len(lines) == 1 and "finetune.learning_rate" in lines[0] and "abc" in lines[0], lines


def tree_snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> digest of every file under `folder` (hidden ones included)."""
    return {str(p.relative_to(folder)): file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_k_above_neuron_count_fails_and_keeps_old_edits(pipeline: Pipeline, restore_params: None) -> None:
    """K > number of FFN neurons: non-zero exit naming K; data/edited/snku untouched, no temp leftovers."""
    edited = pipeline.repo / "data/edited"
    before = tree_snapshot(edited)
    k = N_FFN_NEURONS + 1
    set_param(pipeline.repo, "methods.snku.k", k)
    result = pipeline.run(sys.executable, "-m", "flows.edit", "snku")
    assert result.returncode != 0
    assert re.search(rf"\bk\s*=\s*{k}\b", result.stderr, re.IGNORECASE), tail(result)
    assert tree_snapshot(edited) == before
    leftovers = [p.name for p in edited.rglob("*")  # .gitignore is DVC's own
                 if (p.name.startswith(".") and p.name != ".gitignore") or p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def test_unknown_method_exits_2_listing_methods(pipeline: Pipeline) -> None:
    """An unregistered method: exit 2, one stderr line listing the registered methods."""
    result = pipeline.run(sys.executable, "-m", "flows.edit", "nosuch")
    assert result.returncode == 2, tail(result)
    lines = error_lines(result)
    assert len(lines) == 1 and "nosuch" in lines[0], lines
    assert all(m in lines[0] for m in METHODS), lines


def cli_json(result: subprocess.CompletedProcess) -> dict:
    """The JSON object `unlearn` printed last on stdout."""
    text = result.stdout
    return json.loads(text[text.index("{"):])


def test_deletion_requests_against_the_causal_model(pipeline: Pipeline, tmp_path: Path) -> None:
    """`unlearn request submit` on two of D_f, then rollback: ledger whole, MLflow versions with alias current,
    the export of the current version is the fine-tuned model again, bit for bit."""
    from lib.core.models import load_model
    from lib.deletion.patch import model_digest

    repo = pipeline.repo
    ids = json.loads((repo / "data/causal/memorized/forget.json").read_text())["ids"][:2]
    rows = {r["id"]: r for r in map(json.loads, (repo / "data/causal/corpus/candidates.jsonl").read_text().splitlines())}
    request = tmp_path / "request.jsonl"
    request.write_text("".join(json.dumps({k: rows[i][k] for k in ("id", "text", "secret", "category")}) + "\n"
                               for i in ids))
    cli = (sys.executable, "-m", "flows.request")
    submitted = pipeline.run(*cli, "request", "submit", str(request), "--id", "req-1")
    assert submitted.returncode == 0, tail(submitted)
    receipt = cli_json(submitted)
    assert (receipt["request"], receipt["seq"], receipt["items"], receipt["version"]) == ("req-1", 0, 2, "1")
    assert receipt["forgotten"] <= receipt["memorized"] <= 2 and receipt["audited"] == 0
    rolled = pipeline.run(*cli, "request", "rollback")
    assert rolled.returncode == 0 and cli_json(rolled)["version"] == "2", tail(rolled)
    verified = pipeline.run(*cli, "ledger", "verify")
    assert verified.returncode == 0 and "ledger whole: 2 entries" in verified.stdout, tail(verified)
    shown = [json.loads(line) for line in pipeline.run(*cli, "ledger", "show").stdout.splitlines()]
    assert [e["method"] for e in shown] == ["ig", "rollback"] and shown[1]["params"] == {"undoes": 0}
    exported = pipeline.run(*cli, "model", "export", str(tmp_path / "current"))
    assert exported.returncode == 0, tail(exported)
    base = model_digest(load_model(str(repo / "data/causal/finetuned"), "causal")[0])
    assert model_digest(load_model(str(tmp_path / "current"), "causal")[0]) == base
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo}/mlflow/mlflow.db"
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("unlearning-default", "current")
    assert str(version.version) == "2" and version.tags["request"].startswith("rollback")
    bad = pipeline.run(*cli, "request", "submit", str(tmp_path / "missing.jsonl"))
    assert bad.returncode == 2 and len(error_lines(bad)) == 1 and "missing.jsonl" in bad.stderr, tail(bad)


CANARY = "CANARY-5d1e2-PRIVATE"  # planted in failing inputs below; the privacy test searches for it everywhere


def test_failing_stages_with_a_canary_in_their_input(pipeline: Pipeline, restore_params: None) -> None:
    """A user file rejected before the flow run, and a stage file rejected inside it (through Prefect): both fail
    with one line naming file and line; the privacy test then finds the canary in no output, log or database."""
    repo = pipeline.repo
    bad = repo / "bad_candidates.jsonl"
    bad.write_text(json.dumps({"text": f"call {CANARY} now", "secret": CANARY}) + "\n"
                   + json.dumps({"text": CANARY, "secret": 7}) + "\n")
    set_param(repo, "causal.data.source", "jsonl")
    set_param(repo, "causal.data.path", str(bad))
    result = pipeline.run(sys.executable, "-m", "flows.causal_data")
    assert result.returncode == 2 and "bad_candidates.jsonl line 2" in result.stderr, tail(result)
    bad.unlink()
    candidates = repo / "data/causal/corpus/candidates.jsonl"
    saved = candidates.read_bytes()
    candidates.unlink()  # a new file: the DVC cache's copy stays as it was
    candidates.write_bytes(saved + (json.dumps({"id": CANARY, "text": CANARY, "secret": None, "category": None,
                                                "copies": CANARY}) + "\n").encode())
    try:
        result = pipeline.run(sys.executable, "-m", "flows.causal_memorized")
    finally:
        candidates.unlink()
        candidates.write_bytes(saved)
    assert result.returncode == 2, tail(result)
    assert "candidates.jsonl line" in result.stderr and "'copies' is a string" in result.stderr, tail(result)
    assert "Traceback" not in result.stdout + result.stderr


# --- 7: privacy, over everything the module produced -------------------------------------------

# --- causal-LM track ----------------------------------------------------------------------------

def test_causal_track_reports_every_method(pipeline: Pipeline) -> None:
    """Each causal method has its saved model, metrics beside the original and retrained models, and a report row."""
    repo = pipeline.repo
    memorized = json.loads((repo / "metrics/causal/memorized.json").read_text())
    assert memorized["n_forget"] == 3 and memorized["forget"]["ma"] > memorized["thresholds"]["ma"]
    report = (repo / "reports/causal/results.md").read_text()
    assert (repo / "reports/causal/mia.png").read_bytes().startswith(b"\x89PNG")
    for name in CAUSAL_METHODS:
        assert (repo / f"data/causal/unlearned/{name}/model.safetensors").is_file()
        result = json.loads((repo / f"metrics/causal/{name}.json").read_text())
        assert set(result["models"]) == {"original", "retrain", name}
        for model in result["models"].values():
            assert all(math.isfinite(model[k]) for k in CAUSAL_SCALARS), model
            assert len(model["mia_distances"]) == 3
        # time_s >= 0: SNKU's edit on cached statistics can take under the 10 ms the report rounds to
        assert 0.0 <= result["changed_frac"] <= 1.0 and result["time_s"] >= 0
        label = {"neumuter": "NeuMuter", "ga": "GA", "snku": "SNKU", "ig": "IG"}[name]
        assert f"| {label} |" in report


def test_causal_retrain_forgets_and_methods_edit_the_model(pipeline: Pipeline) -> None:
    """Retraining without D_f lowers its MA; every method changed some weights; IG and NeuMuter only FFN columns;
    SNKU (on the statistics of D_f's secret tokens) grew its K from 4 by doubling under the stop rule."""
    repo = pipeline.repo
    results = {m: json.loads((repo / f"metrics/causal/{m}.json").read_text()) for m in CAUSAL_METHODS}
    models = results["ga"]["models"]
    assert models["retrain"]["ma"] < models["original"]["ma"]
    assert all(r["changed_frac"] > 0 for r in results.values())
    assert results["ig"]["changed_frac"] < 0.05 and results["neumuter"]["changed_frac"] < 0.05
    assert results["ga"]["changed_frac"] > results["ig"]["changed_frac"]
    snku = json.loads((repo / "data/causal/unlearned/snku/report.json").read_text())
    tried = snku["details"]["history"]["neurons"]
    assert tried[0] == 4 and tried == [min(4 * 2 ** i, 74) for i in range(len(tried))] and snku["strength"] == tried[-1]
    # stops at the first K that meets the rule, else at every neuron or where SNKU's filtered clusters run out
    assert snku["reached"] or tried[-1] == 74 or "exceeds" in snku["details"]["history"]["refused"]


def task_states(api_url: str, flow_name: str, prefix: str) -> list[str]:
    """State names of every task run named prefix* in the flow runs named flow_name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with temporary_settings_for(api_url), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return [t.state_name for t in runs if t.name.startswith(prefix)]


def temporary_settings_for(api_url: str) -> Any:
    """Prefect settings pointing the client at the session's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url})


def test_every_causal_model_is_attacked_and_judged(pipeline: Pipeline, prefect_api_url: str) -> None:
    """Each method, the original and the retrained model get every attack's numbers; the report has a row and a
    verdict for each, judged against the retrained row. The retrained model's membership statistics are computed
    by one stage and read from Prefect's cache by the others."""
    repo = pipeline.repo
    rows = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics/attacks/causal").glob("*.json")}
    assert set(rows) == {*CAUSAL_METHODS, "original", "retrain"}
    states = task_states(prefect_api_url, "causal-attack", "membership-stats-")
    assert states.count("Completed") >= 1 and states.count("Cached") >= len(rows) - 1, states
    for name, row in rows.items():
        assert {"direct", "int8", "int4", "sampling", "logit_lens", "paraphrase", "relearn", "mia"} <= set(row), name
        assert row["n_forget"] == 3 and 0.0 <= row["direct"]["span_ma"] <= 1.0
        assert all(0.0 <= v <= 1.0 for v in row["sampling"].values())
    assert rows["original"]["direct"]["span_ma"] > rows["retrain"]["direct"]["span_ma"]  # D_f was memorised
    report = (repo / "reports/robustness.md").read_text().split("### ")[0]  # the verdicts; the cost table follows
    lines = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert {*CAUSAL_METHODS, "original", "retrain"} <= set(lines)
    verdicts = {m: lines[m].rstrip(" |").rsplit(" | ", 1)[1] for m in CAUSAL_METHODS}
    allowed = ("holds", "not forgotten", "undone by", "leaks when sampled", "readable by logit lens",
               "recalled under other prompts", "relearned in", "membership leaks", "over-unlearned")
    assert all(any(v.startswith(a) for a in allowed) for v in verdicts.values()), verdicts


def test_every_masked_model_is_attacked_and_judged(pipeline: Pipeline) -> None:
    """Each method's edited model of each category with memorized secrets, and the retrained model, get every
    attack's numbers; one report table per category, with a verdict per method against the retrained row."""
    repo = pipeline.repo
    memorized = json.loads((repo / "data/memorized/memorized.json").read_text())
    categories = [c for c in CATEGORIES if memorized[c]]
    rows = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics/attacks/masked").glob("*.json")}
    assert categories and set(rows) == {*METHODS, "retrain"}
    for name, row in rows.items():
        assert [c for c in CATEGORIES if c in row] == categories, name
        for cat in categories:
            numbers = row[cat]
            assert numbers["n_forget"] == len(memorized[cat]) and 0.0 <= numbers["direct"]["span_ma"] <= 1.0
            assert {"int8", "int4", "candidates", "logit_lens", "paraphrase", "mia"} <= set(numbers), (name, cat)
    # the retrained model is its own membership reference: its reference-model scores are all 0, AUC exactly 0.5
    assert all(rows["retrain"][c]["mia"]["auc_reference"] == 0.5 for c in categories)
    report = (repo / "reports/robustness.md").read_text()
    for cat in categories:
        table = report.split(f"## Masked LM: {cat}\n")[1].split("### ")[0]
        lines = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
        assert {*METHODS, "retrain"} <= set(lines), (cat, table)
        assert lines["ftm"].endswith("| before unlearning |") and lines["retrain"].endswith("| reference |")


def test_calibrated_points_reports_and_trial_runs(pipeline: Pipeline) -> None:
    """Each calibrated method has a seeded search per category with memorized secrets: its trials, a point (or the
    nearest trial), a report table and figure, and in MLflow a run per search with one child run per trial."""
    repo = pipeline.repo
    memorized = json.loads((repo / "data/memorized/memorized.json").read_text())
    report = (repo / "reports/calibration.md").read_text()
    assert (repo / "reports/calibration.png").read_bytes().startswith(b"\x89PNG")
    runs = mlflow_runs(repo)
    for method in CALIBRATED:
        result = json.loads((repo / f"metrics/calibration/{method}.json").read_text())
        for cat in (c for c in CATEGORIES if c in result):
            row = result[cat]
            assert memorized[cat] and len(row["trials"]) == 3 and row["target"] == 0.1
            assert all(1 <= t["values"]["k"] <= 10 for t in row["trials"])
            if row["best"] is not None:
                assert row["reached"] == (row["best"]["gap_ratio"] <= 0.1)
            parents = [r for r in runs if r.data.tags.get("stage") == "calibrate"
                       and (r.data.tags["method"], r.data.tags["category"]) == (method, cat)]
            assert parents, (method, cat)
            children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
            assert len(children) == 3 and all(r.data.tags["stage"] == "calibrate_trial" for r in children)
            assert f"## {cat}" in report
        assert any(c in result for c in CATEGORIES), method
    for method in CAUSAL_CALIBRATED:  # the causal track: one search on D_f's MA
        result = json.loads((repo / f"metrics/calibration/causal/{method}.json").read_text())
        assert result["gap_before"] == result["ma_before"] - result["ma_retrain"] and result["target"] == 0.1
        if result["gap_before"] <= 0:  # the tiny fine-tuned model already at the retrained model's MA
            assert result["trials"] == [] and result["reached"] is None
            continue
        assert len(result["trials"]) == 2 and all(1 <= t["values"]["max_steps"] <= 4 for t in result["trials"])
        assert all(1e-3 <= t["values"]["learning_rate"] <= 1e-1 for t in result["trials"])
        scored = [t for t in result["trials"] if t["gap_ratio"] is not None]
        assert all(t["gap_ratio"] >= 0 and t["valid_ppl"] > 1 for t in scored) and result["best"] is not None
        assert result["reached"] == (result["best"]["gap_ratio"] <= 0.1)
        parents = [r for r in runs if r.data.tags.get("stage") == "calibrate"
                   and (r.data.tags["method"], r.data.tags["category"]) == (method, "causal")]
        assert parents, method
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(children) == 2 and all(r.data.tags["stage"] == "calibrate_trial" for r in children)
        assert "## Causal LM (MA of D_f)" in report


# --- compute: Ray through Prefect gives the local runner's bytes ------------------------------------------

def scored_outputs(repo: Path) -> dict[str, Any]:
    """causal_memorized's files (bytes) and the ig stage's tensors (their metadata holds a wall time)."""
    from lib.core.io import load_tensors

    out: dict[str, Any] = {name: (repo / "data/causal/memorized" / name).read_bytes()
                           for name in ("scores.jsonl", "forget.json")}
    out.update({cat: load_tensors(repo / f"data/ig/{cat}.safetensors") for cat in CATEGORIES})
    return out


def run_scoring_stages(pipeline: Pipeline) -> tuple[dict[str, Any], str]:
    """Forget the cached scoring and IG results, run causal_memorized and ig; their outputs and output text."""
    for record in (pipeline.repo / ".cache/prefect-results").glob("*"):
        if record.name.startswith(("score-memorization-", "ig-shard-")):
            record.unlink()
    text = ""
    for stage in ("causal_memorized", "ig"):
        result = pipeline.run(sys.executable, "-m", f"flows.{stage}")
        assert result.returncode == 0, tail(result)
        text += result.stdout + result.stderr
    return scored_outputs(pipeline.repo), text


def test_ray_runner_gives_the_local_runners_bytes(pipeline: Pipeline, restore_params: None) -> None:
    """compute.runner: ray (a local Ray on 127.0.0.1, 2 workers of 1 thread) computes every scoring shard and IG
    record as its own Ray task and writes exactly what the local runner (1 thread) writes."""
    repo = pipeline.repo
    set_param(repo, "compute.threads", 1)
    local, local_text = run_scoring_stages(pipeline)
    assert "Creating a local Ray instance" not in local_text
    set_param(repo, "compute.runner", "ray")
    set_param(repo, "compute.workers", 2)
    ray, ray_text = run_scoring_stages(pipeline)
    assert ray_text.count("Creating a local Ray instance") == 2, tail(subprocess.CompletedProcess([], 0, ray_text, ""))
    assert {"candidates-000", "valid-000"} <= set(re.findall(r"\(score-memorization pid=\d+\).*Task run "
                                                          r"'score-memorization-(\w+-\d+)' - Finished", ray_text))
    for name, value in local.items():
        if isinstance(value, bytes):
            assert ray[name] == value, f"{name} differs between the runners"
        else:
            assert all(torch.equal(ray[name][k], value[k]) for k in value), f"ig {name} differs between the runners"


# --- compute: the same stages with bfloat16 weights ------------------------------------------------------

def test_bfloat16_stages_keep_float32_statistics(pipeline: Pipeline, restore_params: None) -> None:
    """compute.dtype=bfloat16 reruns the model stages (not the data ones); models run in bfloat16, fine-tuning keeps
    float32 weights under autocast, attributions are float32; MLflow-free stages only, so it stays short."""
    repo = pipeline.repo
    set_param(repo, "compute.dtype", "bfloat16")
    set_param(repo, "compute.device", "cpu")
    result = pipeline.run("dvc", "repro", "attribution", "causal_memorized")
    assert result.returncode == 0, tail(result)
    ran = set(STAGE_LINE.findall(result.stdout))
    assert {"finetune", "memorized", "attribution", "causal_finetune", "causal_memorized"} <= ran
    assert not ran & {"data", "causal_data", "causal_base", "clustering"}, sorted(ran)  # not asked for, or no model
    finetune = json.loads((repo / "metrics/finetune.json").read_text())["compute"]
    assert (finetune["dtype"], finetune["compute_dtype"], finetune["device"]) == ("float32", "bfloat16", "cpu")
    assert json.loads((repo / "metrics/causal/memorized.json").read_text())["compute"]["dtype"] == "bfloat16"
    from safetensors import safe_open

    for cat in CATEGORIES:
        with safe_open(str(repo / f"data/attribution/{cat}.safetensors"), framework="pt") as handle:
            assert handle.metadata()["dtype"] == "bfloat16"
            scores = handle.get_tensor("attribution")
        assert scores.dtype == torch.float32 and torch.isfinite(scores).all() and scores.abs().sum() > 0


def test_fine_tuning_stage_runs_data_parallel_on_two_gloo_ranks(pipeline: Pipeline, restore_params: None) -> None:
    """compute.processes=2 reruns causal_finetune on 2 torchrun ranks (gloo); its losses match the 1-rank run's."""
    repo = pipeline.repo
    set_param(repo, "compute.processes", 2)
    result = pipeline.run("dvc", "repro", "causal_finetune")
    assert result.returncode == 0, tail(result)
    assert "causal_finetune" in set(STAGE_LINE.findall(result.stdout))
    two = json.loads((repo / "metrics/causal/finetune.json").read_text())
    set_param(repo, "compute.processes", 1)
    result = pipeline.run("dvc", "repro", "causal_finetune")  # DVC's run cache gives back the 1-rank run
    assert result.returncode == 0, tail(result)
    one = json.loads((repo / "metrics/causal/finetune.json").read_text())
    assert (one["ranks"], two["ranks"]) == (1, 2) and one["steps"] == two["steps"] > 0
    # each rank's mean is weighted by its share of items, not of tokens: close, not bit-equal, on unequal lengths
    assert two["epoch_losses"][0] == pytest.approx(one["epoch_losses"][0], rel=0.02)
    assert two["epoch_losses"][-1] == pytest.approx(one["epoch_losses"][-1], rel=0.25, abs=0.05)


# --- privacy: last, so that it covers every run the module made ------------------------------------------

def test_no_secret_in_mlflow_metrics_reports_or_logs(pipeline: Pipeline) -> None:
    """No planted secret appears in MLflow (store, artifacts), metrics/, reports/ or any process output."""
    repo, secrets, causal = pipeline.repo, secrets_of(pipeline.repo), causal_secrets_of(pipeline.repo)
    assert secrets and causal and pipeline.logs
    train = {"train": (repo / "data/corpus/train.jsonl").read_text()}  # the matcher does find planted secrets
    assert len(leaked_in(train, secrets)) == len(secrets)
    causal_train = {"train": (repo / "data/causal/corpus/train.jsonl").read_text()}
    assert len(leaked_in(causal_train, causal)) == len(causal)
    secrets = {**secrets, **causal, "canary": CANARY}
    assert not leaked_in(produced_texts(pipeline), secrets)
