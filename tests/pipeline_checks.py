"""What the end-to-end modules share: a tiny repo after one cold `dvc repro` of some targets, the stages a run
printed, a stage's locked outputs, the SIGKILL-then-rerun loop, MLflow runs and the secret matcher.

tests/test_pipeline.py reproduces the masked and causal tracks with their attacks and calibrations in one repo;
tests/test_pipeline_bench.py the benchmark track in another, so that xdist runs the two cold runs side by side.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from lib.core.io import file_digest
from tests.conftest import PREFECT_HOMES
from tests.pipeline_repo import make_repo, run

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


@dataclass
class Pipeline:
    """The tiny repo, the environment of its subprocesses and every output they printed."""

    repo: Path
    env: dict[str, str]
    targets: tuple[str, ...] = ()  # what the cold run reproduced (all of dvc.yaml when empty)
    logs: list[str] = field(default_factory=list)
    cold: subprocess.CompletedProcess | None = None
    cold_seconds: float = 0.0
    started: str = ""  # ISO UTC time the cold run began

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        """Run a command in the repo and keep its output for the privacy check."""
        result = run(list(cmd), self.repo, self.env, check=False)
        self.logs.append(result.stdout + result.stderr)
        return result

    def repro(self, *targets: str) -> tuple[subprocess.CompletedProcess, set[str]]:
        """`dvc repro [targets]` (the cold run's targets when none), which must succeed; the result and the stages
        it ran."""
        result = self.run("dvc", "repro", *(targets or self.targets))
        assert result.returncode == 0, f"dvc repro failed:\n{tail(result)}"
        return result, set(STAGE_LINE.findall(result.stdout))


def start_pipeline(dest: Path, prefect_api_url: str, *targets: str,
                   overrides: dict[str, Any] | None = None) -> Pipeline:
    """A tiny git+DVC repo at `dest` (its tiny params with `overrides`) after one cold `dvc repro <targets>` against
    the session's Prefect server."""
    repo = make_repo(dest, overrides)
    env = {"PREFECT_API_URL": prefect_api_url, "PREFECT_HOME": str(repo / ".prefect"),
           "UNLEARN_PARAMS": "params.yaml", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false"}
    pipe = Pipeline(repo=repo, env=env, targets=targets, started=datetime.now(timezone.utc).isoformat())
    started = time.perf_counter()
    pipe.cold = pipe.run("dvc", "repro", *targets)
    pipe.cold_seconds = time.perf_counter() - started
    return pipe


def tail(result: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of a process's output, for assertion messages."""
    return (result.stdout + "\n" + result.stderr)[-chars:]


def locked_outs(repo: Path, stage: str) -> list[Path]:
    """The output paths dvc.lock records for `stage`."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]
    return [repo / out["path"] for out in lock["outs"]]


def outputs_snapshot(repo: Path, stage: str) -> dict[str, Any]:
    """Relative path -> content of every file of the stage's outputs: JSON without durations, others by digest."""
    from tools.compare_runs import TIME_KEYS

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not any(t in k for t in TIME_KEYS)}
        return [strip(v) for v in x] if isinstance(x, list) else x

    files = [f for out in locked_outs(repo, stage) for f in ([out] if out.is_file() else sorted(out.rglob("*")))]
    return {str(f.relative_to(repo)): strip(json.loads(f.read_text())) if f.suffix == ".json" else file_digest(f)
            for f in files if f.is_file()}


def leftovers(repo: Path, stage: str) -> list[str]:
    """Hidden siblings of the stage's outputs (asides, temporary folders) still on disk."""
    return [str(p.relative_to(repo)) for out in locked_outs(repo, stage) for p in out.parent.glob(f".{out.name}.*")]


def kill_and_rerun(pipeline: Pipeline, stages: tuple[str, ...], log_dir: Path, settle: str,
                   delays: tuple[float, float] = (1.0, 15.0)) -> tuple[int, int]:
    """Each stage: `dvc repro -f -s` killed (SIGKILL, whole process group) after a random delay, then `dvc repro -s`
    finishes with outputs equal to the uninterrupted run's (durations aside) and no leftovers; (seed, kills)."""
    from tools.dvc_recover import recover

    seed = int(os.environ.get("KILL_SEED", random.randrange(10**6)))
    rng, killed = random.Random(seed), 0
    pipeline.repro(*stages)  # earlier tests restore params.yaml but may leave these stages' outputs stale
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **pipeline.env}
    for stage in stages:
        before = outputs_snapshot(pipeline.repo, stage)
        recover(pipeline.repo)  # what `make run` does before dvc repro: keeps a copy of dvc.lock
        delay = rng.uniform(*delays)
        with open(log_dir / f"{stage}.log", "wb") as log:
            proc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=pipeline.repo, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed += 1
        pipeline.logs.append((log_dir / f"{stage}.log").read_text(errors="replace"))
        recover(pipeline.repo)  # a kill inside DVC's in-place write of dvc.lock / rwlock: put back, as make run does
        result = pipeline.run("dvc", "repro", "-s", stage)
        assert result.returncode == 0, f"KILL_SEED={seed} {stage} after {delay:.1f} s:\n{tail(result)}"
        assert outputs_snapshot(pipeline.repo, stage) == before, f"KILL_SEED={seed} {stage} after {delay:.1f} s"
        if leftovers(pipeline.repo, stage) and "didn't change, skipping" in result.stdout:
            # killed after writing its outputs whole: unchanged, DVC skips it; the next stage to run settles it
            assert pipeline.run("dvc", "repro", "-f", "-s", settle).returncode == 0
        assert leftovers(pipeline.repo, stage) == [], f"KILL_SEED={seed} {stage}"
    print(f"KILL_SEED={seed}: {killed} of {len(stages)} stages killed mid-run")
    return seed, killed


def mlflow_runs(repo: Path) -> list[Any]:
    """Every run of the repo's MLflow experiment, read straight from its SQLite store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    params = yaml.safe_load((repo / "params.yaml").read_text())["mlflow"]
    uri = params["tracking_uri"].replace("sqlite:///", f"sqlite:///{repo}/", 1)  # relative to the repo
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(params["experiment"])
    assert experiment is not None, f"no MLflow experiment {params['experiment']!r} in {uri}"
    return client.search_runs([experiment.experiment_id], max_results=1000)


def written_forms(secret: str) -> set[str]:
    """The secret as it stands in plain text and inside a JSON string (quotes escaped; non-ASCII as is, or \\u)."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


def leaked_in(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    """'<where>: <record id>' for each secret found in a text, in any of its written forms (the secret itself is
    never shown)."""
    forms = {rid: written_forms(s) for rid, s in secrets.items()}
    return [f"{where}: {rid}" for where, text in texts.items() for rid in secrets
            if any(form in text for form in forms[rid])]


def produced_texts(pipeline: Pipeline) -> dict[str, str]:
    """Everything the module's runs wrote where a secret must never be: MLflow (runs, store, artifacts), metrics/,
    reports/, every process output, the Prefect database (and its WAL) and the server's log."""
    repo = pipeline.repo
    texts = {f"mlflow run {r.info.run_id}": json.dumps([r.data.params, r.data.tags, sorted(r.data.metrics)])
             for r in mlflow_runs(repo)}
    for folder in ("metrics", "reports", "mlflow"):  # mlflow/: the SQLite store itself and every artifact
        texts.update({str(p.relative_to(repo)): p.read_text(errors="replace")
                      for p in (repo / folder).rglob("*") if p.is_file()})
    texts.update({f"output of run {i}": log for i, log in enumerate(pipeline.logs)})
    home = PREFECT_HOMES[pipeline.env["PREFECT_API_URL"]]
    texts.update({f"prefect {p.name}": p.read_bytes().decode("utf-8", errors="replace")
                  for p in home.rglob("*") if p.is_file() and (p.name.startswith("prefect.db") or p.suffix == ".log")})
    assert any(name.startswith("prefect prefect.db") for name in texts), sorted(texts)[-5:]
    return texts
