"""flows.serve: parameter validation, and a real Prefect server + served deployment running the pipeline."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from flows.serve import check_loopback, main, stream_command, track_targets, validate_request
from tests.pipeline_repo import ROOT, make_repo, tiny_params

STAGE_FLOWS = {"data", "finetune", "memorized", "activations", "attribution", "clustering", "edit", "evaluate",
               "report"}
RUN_TIMEOUT_S = 1200.0  # a cold run of the tiny repo's masked track (about 4 min alone on 2 cores; more when shared)


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """The tiny test params written to a temp params.yaml."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))))
    return path


def test_validate_request_maps_parameters_to_dvc_set_params(params_file: Path) -> None:
    args = validate_request(params_file, model="embedded:minilm", methods=["random"], categories=["TEL", "NAME"],
                            overrides={"methods.random.k": "7"})
    assert args == ["methods.random.k=7", "finetune.model='embedded:minilm'", "pipeline.methods=['random']",
                    "pipeline.categories=['TEL','NAME']"]
    assert validate_request(params_file) == []


def test_validate_request_rejects_unknown_method(params_file: Path) -> None:
    sections = sorted(yaml.safe_load(params_file.read_text())["methods"])
    allowed = re.escape(f"allowed: methods with a section under methods: {sections}")
    with pytest.raises(ValueError, match=r"'nope'.*" + allowed):
        validate_request(params_file, methods=["random", "nope"])


@pytest.mark.parametrize("kwargs, match", [
    ({"categories": ["TEL", "PHONE"]}, r"'PHONE'.*allowed: \['TEL', 'NAME', 'RANDOM'\]"),
    ({"overrides": {"methods.random.kk": "7"}}, r"methods.random.kk.*under methods.random: \['by_category', 'decay_mode'"),
    ({"overrides": {"methods.random.k": "-3"}}, r"methods\.random\.k = -3 invalid; allowed: an integer >= 1"),
    ({"overrides": {"methods.random.k": "seven"}}, r"methods.random.k = 'seven'"),
    ({"methods": []}, r"methods = \[\]"),
    ({"methods": ["random"], "overrides": {"pipeline.methods": "[snku]"}}, r"set it once"),
])
def test_validate_request_rejects_bad_values(params_file: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_request(params_file, **kwargs)


def test_validate_request_checks_the_preset_under_the_overrides(params_file: Path) -> None:
    assert validate_request(params_file, preset="quick", overrides={"seed": "3"}) == ["seed=3"]
    with pytest.raises(ValueError, match="unknown preset 'fast'; allowed: .*quick"):
        validate_request(params_file, preset="fast")
    with pytest.raises(ValueError, match="methods.random.k"):  # the preset merged, then the bad override checked
        validate_request(params_file, preset="quick", overrides={"methods.random.k": "0"})


def test_validate_request_leaves_params_file_untouched(params_file: Path) -> None:
    before = params_file.read_text()
    validate_request(params_file, methods=["snku"], overrides={"seed": "3"})
    assert params_file.read_text() == before


def test_tracks_name_their_dvc_targets() -> None:
    assert track_targets("all") == [] and track_targets("causal") == ["causal_report"]
    with pytest.raises(ValueError, match="track='gpu'; allowed: all, masked, causal, bench"):
        track_targets("gpu")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.com", "::"])
def test_main_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        main(["--host", host, "--port", "1"])


def test_loopback_hosts_are_accepted() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_loopback(host)


def test_stream_command_logs_each_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test_serve.stream")
    with caplog.at_level(logging.INFO, logger=logger.name):
        stream_command([sys.executable, "-c", "print('one'); print(); print('two')"], tmp_path, dict(os.environ),
                       logger)
    assert [r.getMessage() for r in caplog.records] == ["one", "two"]


def test_stream_command_failure_raises_with_output_tail(tmp_path: Path) -> None:
    script = "import sys; [print(f'line {i}') for i in range(100)]; print('boom', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError, match="exited with 3") as err:
        stream_command([sys.executable, "-c", script], tmp_path, dict(os.environ), logging.getLogger("test_serve"))
    assert "line 99" in str(err.value) and "boom" in str(err.value) and "line 0\n" not in str(err.value)


def test_unlearn_prefect_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    if healthy("http://127.0.0.1:4200/api"):
        pytest.skip("a Prefect server runs at the default port here")
    env = {**spawn_env(tmp_path), "PREFECT_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "flows.request", "prefect", "deployment", "ls"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "no Prefect server answers at http://127.0.0.1:4200/api" in done.stderr
    assert "make ui" in done.stderr


def test_main_refuses_a_port_held_by_something_else() -> None:
    with socket.socket() as sock:  # listens but never answers HTTP
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(RuntimeError, match="not a Prefect server"):
            main(["--port", str(sock.getsockname()[1])])


# --- integration: a real server, `python -m flows.serve`, a run triggered through the API -------------------

def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a process in its own session (so killpg reaches its children), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def killpg(proc: subprocess.Popen | None) -> None:
    """Stop a spawned process group: SIGTERM, then SIGKILL after 20 s."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, n: int = 60) -> str:
    """The last `n` lines of a log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def wait_for(check: Callable[[], Any], timeout: float, what: str, procs: dict[Path, subprocess.Popen]) -> Any:
    """Poll `check` until truthy; fail early (with the log) if a spawned process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{log.name} process exited ({proc.returncode}) while waiting for {what}:\n{tail(log)}")
        result = check()
        if result:
            return result
        time.sleep(2.0)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n" + "\n".join(tail(p) for p in procs))


def healthy(url: str) -> bool:
    """Whether the Prefect API answers at `url`."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def deployment_exists(client: Any, name: str = "pipeline/unlearning") -> bool:
    """Whether deployment `name` is registered."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name) is not None
    except ObjectNotFound:
        return False


def spawn_env(tmp_path: Path) -> dict[str, str]:
    """Child environment: venv first on PATH, private PREFECT_HOME, telemetry off, no inherited API URL."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    for key in ("PREFECT_API_URL", "UNLEARN_PARAMS"):
        env.pop(key, None)
    return env


def assert_run_effects(client: Any, repo: Path) -> None:
    """Stage flows and edit tasks are in the API; params.yaml and the metrics show the UI's parameters."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    runs = client.read_flow_runs()
    names = {client.read_flow(r.flow_id).name: r for r in runs}
    assert STAGE_FLOWS <= set(names), f"missing stage flow runs: {STAGE_FLOWS - set(names)}"
    assert all(names[n].state.is_completed() for n in STAGE_FLOWS)
    unlearns = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="unlearn-")))
    # the masked track's runs are named by category (the causal and benchmark tracks' by D_f / run)
    edits = [t for t in unlearns if t.name.rsplit("-", 1)[-1] in ("TEL", "NAME", "RANDOM")]
    assert {t.name for t in edits} == {"unlearn-random-TEL"}  # no snku, no NAME/RANDOM: parameters took effect
    assert all(t.state.is_completed() for t in edits)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["pipeline"]["methods"] == ["random"] and params["pipeline"]["categories"] == ["TEL"]
    assert params["methods"]["random"]["k"] == 7
    metrics = yaml.safe_load((repo / "metrics" / "methods" / "random.json").read_text())
    assert set(metrics) == {"TEL"} and metrics["TEL"]["neurons_edited"] == 7
    assert not (repo / "data" / "causal").exists() and not (repo / "data" / "bench").exists()  # track = masked


def assert_request_deployment(client: Any, procs: dict[Path, subprocess.Popen]) -> None:
    """deletion-request/submit is served with the request file as its parameter; a run given a file that does
    not exist fails, naming it (a real request needs the causal track's outputs: tests/test_pipeline.py)."""
    from prefect.deployments import run_deployment

    name = "deletion-request/submit"
    wait_for(lambda: deployment_exists(client, name), 60, f"deployment {name}", procs)
    assert "path" in client.read_deployment_by_name(name).parameter_openapi_schema["required"]
    run = run_deployment(name, timeout=0, parameters={"path": "no-such-request.jsonl"})
    final = wait_for(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, 300, "the request run", procs)
    assert final.state.is_failed() and "no-such-request.jsonl" in (final.state.message or ""), final.state


def tree_view(repo: Path) -> dict[str, Any]:
    """What a user sees of the repo: git status and diffs, HEAD, and the bytes of every file outside DVC's, Prefect's
    and MLflow's own folders (params.yaml, dvc.lock, metrics/ and the DVC outputs under data/ included)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout

    skip = {".git", ".dvc", ".cache", ".prefect", "mlflow", "__pycache__"}
    files = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and not skip & set(p.relative_to(repo).parts)}
    return {"status": git("status", "--porcelain=v1", "-uall"), "staged": git("diff", "--cached"),
            "unstaged": git("diff"), "head": git("rev-parse", "HEAD"), "files": files}


def stage_runs(client: Any, tag: str) -> list[Any]:
    """The flow runs carrying `tag`."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


def assert_stage_runs_linked(client: Any, run: Any) -> None:
    """Every stage flow run of the deployment run carries its tag, and the run's page has the table linking them."""
    linked = stage_runs(client, f"run:{run.name}")
    names = {client.read_flow(r.flow_id).name for r in linked}
    assert STAGE_FLOWS <= names, STAGE_FLOWS - names
    artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run.id and a.key == "stage-runs"]
    assert artifacts, "no stage-runs artifact on the deployment run"
    table = str(artifacts[0].data)
    assert all(f"/runs/flow-run/{r.id}" in table for r in linked), table


def run_to_end(client: Any, procs: dict[Path, subprocess.Popen], **parameters: Any) -> Any:
    """Start a pipeline/unlearning run with these parameters and wait for its final state."""
    from prefect.deployments import run_deployment

    run = run_deployment("pipeline/unlearning", timeout=0, parameters=parameters)
    return wait_for(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, RUN_TIMEOUT_S,
                    f"pipeline run {parameters}", procs)


def assert_failed_run_leaves_the_tree(client: Any, repo: Path, procs: dict[Path, subprocess.Popen], log: Path) -> None:
    """A run whose stage fails (K above the tiny model's neuron count) leaves git, params and outputs as they were."""
    before = tree_view(repo)
    final = run_to_end(client, procs, track="masked", methods=["random"], categories=["TEL"],
                       overrides={"methods.random.k": "100000"})
    assert final.state.is_failed(), f"{final.state}\n{tail(log)}"
    assert tree_view(repo) == before
    assert not (repo / ".dvc" / "tmp" / "pipeline-worktree.json").exists()


def assert_cancelled_run_leaves_the_tree(client: Any, repo: Path, procs: dict[Path, subprocess.Popen],
                                         log: Path) -> None:
    """A run cancelled from the API while its stages run (a preset that retrains everything) leaves the tree as it
    was, the preset's rewrite of params.yaml included."""
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    before = tree_view(repo)
    run = run_deployment("pipeline/unlearning", timeout=0, parameters={"track": "masked", "preset": "retrain"})
    wait_for(lambda: stage_runs(client, f"run:{run.name}"), RUN_TIMEOUT_S, "a stage of the run to start", procs)
    client.set_flow_run_state(run.id, Cancelling())
    final = wait_for(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, 300, "the cancel", procs)
    assert final.state.is_cancelled(), f"{final.state}\n{tail(log)}"
    assert tree_view(repo) == before
    assert not (repo / ".dvc" / "tmp" / "pipeline-worktree.json").exists()


def add_presets(repo: Path) -> None:
    """Two presets in the tiny repo: one the first run uses under its overrides, one that retrains the model."""
    (repo / "presets").mkdir()
    (repo / "presets" / "ui.yaml").write_text("methods: {random: {k: 5}}\nevaluate: {max_valid_texts: 12}\n")
    (repo / "presets" / "retrain.yaml").write_text("finetune: {epochs: 3}\n")
    subprocess.run(["git", "add", "presets"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "presets"], cwd=repo,
                   check=True)


@pytest.mark.integration
def test_ui_deployment_runs_the_pipeline_with_run_parameters(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    started = time.monotonic()
    repo, port, env = make_repo(tmp_path / "repo"), free_port(), spawn_env(tmp_path)
    add_presets(repo)
    api = f"http://127.0.0.1:{port}/api"
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = serve = None
    try:
        server = spawn([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                        str(port)], tmp_path, env, server_log)
        wait_for(lambda: healthy(api), 120, "the Prefect server", {server_log: server})
        serve = spawn([sys.executable, "-m", "flows.serve", "--port", str(port)], repo, env, serve_log)
        procs = {server_log: server, serve_log: serve}
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            wait_for(lambda: deployment_exists(client), 120, "deployment pipeline/unlearning", procs)
            assert (Path(env["PREFECT_HOME"]) / "ui-server.url").read_text().strip() == api
            listed = subprocess.run([sys.executable, "-m", "flows.request", "prefect", "deployment", "ls"], cwd=repo,
                                    env=env, capture_output=True, text=True, timeout=120)  # no PREFECT_API_URL
            assert listed.returncode == 0 and "pipeline/unlearning" in listed.stdout, listed.stdout + listed.stderr
            # the masked track's stages only: this test is about the UI path; the overrides apply over the preset
            final = run_to_end(client, procs, methods=["random"], categories=["TEL"], preset="ui",
                               overrides={"methods.random.k": "7"}, track="masked")
            assert final.state.is_completed(), f"{final.state}\n{tail(serve_log)}"
            assert_run_effects(client, repo)
            assert yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["max_valid_texts"] == 12
            assert_stage_runs_linked(client, final)
            subprocess.run(["git", "add", "-A"], cwd=repo, check=True)  # the user keeps the run's results
            subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "ui run"],
                           cwd=repo, check=True)
            (repo / "notes.txt").write_text("the user's own untracked file\n")
            assert_failed_run_leaves_the_tree(client, repo, procs, serve_log)
            assert_cancelled_run_leaves_the_tree(client, repo, procs, serve_log)
            assert_request_deployment(client, procs)
        print(f"integration wall time: {time.monotonic() - started:.0f}s")
    finally:
        killpg(serve)
        killpg(server)
