"""`make mlflow-ui` (tools/mlflow_ui.py): the experiment's kind and saved views, and the server it starts."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tasks.tracking import VIEW_TAG, VIEWS, view_tags
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parents[1]


def logged_stage_tags() -> set[str]:
    """Every `"stage": "<name>"` tag the code gives an MLflow run."""
    found: set[str] = set()
    for path in [*ROOT.glob("flows/*.py"), *ROOT.glob("tasks/*.py")]:
        found |= set(re.findall(r'"stage":\s*"(\w+)"', path.read_text(encoding="utf-8")))
    return found


def test_each_view_filters_on_a_stage_the_code_logs_and_names_metric_columns() -> None:
    tags = view_tags()
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    stages = logged_stage_tags()
    for key, (name, stage, _tags, metrics) in VIEWS.items():
        envelope = json.loads(tags[VIEW_TAG + key])
        assert envelope["name"] == name and isinstance(envelope["createdAt"], int)
        state = json.loads(envelope["state"])
        assert state["searchFilter"] == f"tags.stage = '{stage}'" and stage in stages, (key, stages)
        assert [c for c in state["selectedColumns"] if c.startswith("metrics.")] == [f"metrics.`{m}`" for m in metrics]


def get_json(url: str) -> dict:
    """GET a JSON document."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def group_processes(pgid: int) -> list[int]:
    """The pids of a process group (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after the command: state, ppid, pgrp
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.integration
def test_mlflow_ui_sets_the_views_and_runs_two_processes(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("mlflow: {tracking_uri: 'sqlite:///store/mlflow.db', experiment: ui-test, "
                                          "artifact_location: store/artifacts}\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNLEARN_PARAMS": "params.yaml", "PREFECT_HOME": str(tmp_path)}
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tools.mlflow_ui", "--port", str(port)], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url, deadline, found = f"http://127.0.0.1:{port}", time.monotonic() + 120, None
        while time.monotonic() < deadline and found is None:
            assert proc.poll() is None, log.read_text()
            try:
                found = get_json(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-test")
            except OSError:
                time.sleep(1)
        assert found is not None, log.read_text()
        tags = {t["key"]: t["value"] for t in found["experiment"]["tags"]}
        assert {k: tags.get(k) for k in view_tags()} == view_tags()
        printed = log.read_text()
        assert all(f"viewStateShareKey={key}" in printed for key in VIEWS), printed
        time.sleep(5)  # a job runner would have started its consumers by now
        assert len(group_processes(proc.pid)) <= 2, group_processes(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
