"""`make ui`: a local Prefect server serving two deployments: the whole DVC pipeline, and deletion requests.

Every UI (or scheduled) run becomes `dvc exp run -S key=value ...`, so params.yaml stays the single
source of parameters and every run is a reproducible DVC experiment.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (environment first)
import yaml
from prefect import flow, get_run_logger, runtime, serve
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import RUN_TAG_ENV, stage_name
from flows.check import check_params
from lib.core import presets, worktree
from lib.core.io import read_json, write_text
from lib.core.params import Params, load_params, lookup

ROOT = Path(__file__).resolve().parents[1]  # the repo whose dvc.yaml and params.yaml a run uses
PRESETS = ROOT / "presets"
SNAPSHOT = ROOT / ".dvc" / "tmp" / "pipeline-worktree.json"  # the work tree before the run in progress
DEPLOYMENT = "unlearning"
REQUEST_DEPLOYMENT = "submit"  # deletion-request/submit: one request file per run
HEALTH_TIMEOUT_S = 90.0
TAIL_LINES = 40
EXPLICIT_KEYS = {"model": "finetune.model", "methods": "pipeline.methods", "categories": "pipeline.categories"}
TRACKS = {"all": [], "masked": ["report"], "causal": ["causal_report"], "bench": ["bench_report"],
          "attacks": ["robustness_report"], "calibrate": ["calibration_report"]}  # dvc targets (all: every stage)
DEFAULT_API_URL = "http://127.0.0.1:4200/api"  # `make ui`'s server at its default port


def server_record() -> Path:
    """Where `make ui` writes its server's API URL while it serves (in PREFECT_HOME, the repository's .prefect/)."""
    return Path(os.environ["PREFECT_HOME"]) / "ui-server.url"


def running_api_url() -> str | None:
    """The API of the Prefect server to talk to: $PREFECT_API_URL when set, else the server `make ui` recorded (or
    127.0.0.1:4200) when it answers; None when none does."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    record = server_record()
    candidates = [record.read_text(encoding="utf-8").strip()] if record.is_file() else []
    return next((url for url in [*candidates, DEFAULT_API_URL] if server_healthy(url.removesuffix("/api"))), None)


def track_targets(track: str) -> list[str]:
    """The `dvc exp run` targets of a track (all: every stage)."""
    if track not in TRACKS:
        raise ValueError(f"track={track!r}; allowed: {', '.join(TRACKS)}")
    return TRACKS[track]


def track_metrics(track: str, params: Params) -> dict[str, Any]:
    """The metrics files of the methods a run's track(s) scored, keyed by track then method (and run)."""
    out: dict[str, Any] = {}
    if track in ("all", "masked"):
        out["masked"] = {m: read_json(ROOT / "metrics" / "methods" / f"{m}.json")
                         for m in params.get("pipeline.methods", list[str])}
    if track in ("all", "causal"):
        out["causal"] = {m: read_json(ROOT / "metrics" / "causal" / f"{m}.json")
                         for m in params.get("causal.pipeline", list[str])}
    if track in ("all", "attacks"):
        out["attacks"] = {f"{family}-{p.stem}": read_json(p) for family in ("causal", "masked")
                          for p in sorted((ROOT / "metrics" / "attacks" / family).glob("*.json"))}
    if track in ("all", "calibrate"):
        out["calibration"] = {m: read_json(ROOT / "metrics" / "calibration" / f"{m}.json")
                              for m in params.get("calibration.methods", list[str])}
    if track in ("all", "bench"):
        out["bench"] = {f"{r}-{m}": read_json(ROOT / "metrics" / "bench" / r / f"{m}.json")
                        for r in params.get("benchmarks.runs", dict) for m in params.get("benchmarks.pipeline", list[str])}
    return out


def hydra_value(value: str | list[str]) -> str:
    """A string or list of strings in DVC's `-S` (Hydra) syntax, quoted so ':' '/' ',' stay literal."""
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if not isinstance(value, str):
        raise ValueError(f"value {value!r} is not a string or a list of strings")
    # Hydra unescapes backslashes only in front of a quote (the closing quote counts).
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
    return f"'{escaped}'"


def requested_settings(model: str | None, methods: list[str] | None, categories: list[str] | None,
                       overrides: dict[str, str] | None) -> dict[str, str]:
    """The run's parameters as params.yaml key -> `-S` value text (overrides are passed verbatim)."""
    settings = {str(k): str(v) for k, v in (overrides or {}).items()}
    for name, value in {"model": model, "methods": methods, "categories": categories}.items():
        if value is None:
            continue
        key = EXPLICIT_KEYS[name]
        if key in settings:
            raise ValueError(f"{key} is set both by the {name!r} parameter and in overrides; set it once")
        if isinstance(value, list) and not value:
            raise ValueError(f"{name} = []; give at least one entry or leave it unset for params.yaml's value")
        settings[key] = hydra_value(value)
    return settings


def candidate_params(base_text: str, settings: dict[str, str]) -> Params:
    """Apply the settings to a temp params.yaml holding `base_text` exactly as `dvc exp run -S` will; load_params it."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    raw = yaml.safe_load(base_text)
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "params.yaml"
        candidate.write_text(base_text, encoding="utf-8")
        for key, value in settings.items():
            lookup(raw, key)  # an unknown key names the keys allowed where its path stopped
            try:
                apply_overrides(candidate, [f"{key}={value}"])
            except (InvalidArgumentError, ValueError) as err:  # Hydra/OmegaConf errors span lines
                reason = str(err.__cause__ or err).splitlines()[0]
                raise ValueError(f"cannot set {key}={value}: {reason}") from None
        return check_params(str(candidate))


def base_params(params_file: Path, preset: str | None) -> str:
    """The params.yaml text a run starts from: the file, or the file with presets/<preset>.yaml merged in."""
    if preset is None:
        return params_file.read_text(encoding="utf-8")
    return presets.merged_text(params_file, PRESETS, preset)


def validate_request(params_file: Path, model: str | None = None, methods: list[str] | None = None,
                     categories: list[str] | None = None, overrides: dict[str, str] | None = None,
                     preset: str | None = None) -> list[str]:
    """Check a run's parameters (on top of the preset, if any) against params.yaml's rules; returns the
    `-S key=value` arguments."""
    settings = requested_settings(model, methods, categories, overrides)
    params = candidate_params(base_params(Path(params_file), preset), settings)
    for name, value in {"model": model, "methods": methods, "categories": categories}.items():
        if value is not None and params.get(EXPLICIT_KEYS[name]) != value:
            raise ValueError(f"{name} = {value!r} does not survive DVC's -S parsing "
                             f"(got {params.get(EXPLICIT_KEYS[name])!r}); pass it via overrides")
    return [f"{key}={value}" for key, value in settings.items()]


def git_identity_env(cwd: Path) -> dict[str, str]:
    """GIT_AUTHOR_*/GIT_COMMITTER_* defaults when git has no user, since experiments are commits."""
    def configured(key: str) -> bool:
        done = subprocess.run(["git", "config", "--get", key], cwd=cwd, capture_output=True, text=True)
        return bool(done.stdout.strip())

    env: dict[str, str] = {}
    if not configured("user.name"):
        env.update(GIT_AUTHOR_NAME="unlearning-pipeline", GIT_COMMITTER_NAME="unlearning-pipeline")
    if not configured("user.email"):
        env.update(GIT_AUTHOR_EMAIL="pipeline@localhost", GIT_COMMITTER_EMAIL="pipeline@localhost")
    return env


def dvc_env(cwd: Path) -> dict[str, str]:
    """Environment of `dvc exp run`: ours (PREFECT_API_URL included) + this venv first on PATH."""
    env = {**os.environ, **git_identity_env(cwd), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("UNLEARN_PARAMS", None)  # the stages must read the params.yaml that -S just wrote
    return env


def stream_command(cmd: list[str], cwd: Path, env: dict[str, str],
                   logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Run `cmd`, each output line to `logger`; non-zero exit raises with the output's tail."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip():
                logger.info(line.rstrip())
                tail.append(line.rstrip())
        proc.wait()
    except BaseException:  # cancelled or crashed: stop DVC and the stage it is running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; last lines:\n" + "\n".join(tail))


def experiment_name() -> str:
    """A unique DVC experiment name that points back at the Prefect flow run."""
    return f"{runtime.flow_run.name}-{str(runtime.flow_run.id)[:8]}"


def restore_worktree(cwd: Path, logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Undo what an unfinished run left (its SNAPSHOT): git HEAD, index and files, then DVC's outputs to match the
    restored dvc.lock (from the cache); nothing to do when no run was left unfinished."""
    state = worktree.load(SNAPSHOT)
    if state is None:
        return
    worktree.restore(cwd, state)
    done = subprocess.run([sys.executable, "-m", "dvc", "checkout", "--force", "--quiet"], cwd=cwd,
                          env=dvc_env(cwd), capture_output=True, text=True)
    if done.returncode != 0:  # outputs missing from the cache: `dvc repro` rebuilds them
        logger.warning("dvc checkout after the restore: %s", done.stderr.strip()[-500:])
    SNAPSHOT.unlink(missing_ok=True)
    logger.info("work tree restored to its state before the unfinished run (HEAD %s)", state.head[:8])


def run_tag() -> str:
    """The tag every stage flow run of this deployment run carries."""
    return f"run:{runtime.flow_run.name}"


def link_stage_runs(tag: str) -> None:
    """A table artifact on the deployment run's page: each stage flow run it started, its state and a link."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url or ""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
                                     sort=FlowRunSort.START_TIME_ASC, limit=200)
        names = {r.flow_id: client.read_flow(r.flow_id).name for r in runs}
    rows = [f"| {stage_name(names[r.flow_id], r.parameters)} | {r.state_name} | [{r.name}]({ui}/runs/flow-run/{r.id})"
            " |" for r in runs]
    create_markdown_artifact("\n".join([f"Stage flow runs of this run (tag `{tag}`): {len(runs)}", "",
                                         "| stage | state | flow run |", "|---|---|---|", *rows]),
                             key="stage-runs", description="the DVC stages this run started")


@flow(name="pipeline")
def pipeline(model: str | None = None, methods: list[str] | None = None, categories: list[str] | None = None,
             overrides: dict[str, str] | None = None, track: str = "all", preset: str | None = None) -> dict[str, Any]:
    """Run the DVC pipeline as a `dvc exp run` with these params.yaml settings; returns its metrics.

    track: all (every stage), masked, causal or bench (that track's report and what it needs). preset: a file of
    presets/ merged into params.yaml first (quick: every stage in minutes on the CPU). overrides: any other
    params.yaml key (dotted) -> value in `dvc exp run -S` syntax, e.g. {"methods.random.k": "7"}. Unset
    parameters keep params.yaml's values. A run that fails or is cancelled leaves the git work tree as it was.
    """
    logger = get_run_logger()
    restore_worktree(ROOT, logger)  # a run killed before it could clean up
    targets = track_targets(track)
    set_params = validate_request(ROOT / "params.yaml", model, methods, categories, overrides, preset)
    name, tag = experiment_name(), run_tag()
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--name", name, *targets]
    for item in set_params:
        cmd += ["-S", item]
    logger.info("experiment %s%s: dvc exp run %s %s", name, f" (preset {preset})" if preset else "",
                " ".join(targets), " ".join(f"-S {s}" for s in set_params))
    worktree.save(worktree.record(ROOT), SNAPSHOT)
    try:
        if preset is not None:  # the experiment records the merged params.yaml; -S applies on top
            presets.write_merged(ROOT / "params.yaml", PRESETS, preset)
        stream_command(cmd, ROOT, {**dvc_env(ROOT), RUN_TAG_ENV: tag}, logger)
    except BaseException:
        restore_worktree(ROOT, logger)
        raise
    finally:
        with contextlib.suppress(Exception):  # the links are a convenience: never mask the run's own outcome
            link_stage_runs(tag)
    SNAPSHOT.unlink(missing_ok=True)
    return {"experiment": name, "track": track, "preset": preset,
            "metrics": track_metrics(track, load_params(ROOT / "params.yaml"))}


def deployments(cron: str | None) -> list[Any]:
    """The served deployments: the pipeline (optionally on a schedule) and deletion requests, whose parameter is
    the request file (flows/request.py, loaded by entrypoint: stage modules never import each other)."""
    request = load_flow_from_entrypoint(f"{ROOT / 'flows' / 'request.py'}:request_flow")
    return [pipeline.to_deployment(name=DEPLOYMENT, cron=cron),
            request.to_deployment(name=REQUEST_DEPLOYMENT, description="Apply one deletion request file (JSONL rows "
                                  "{id, text, secret, category}) to the causal model's current version.")]


def check_loopback(host: str) -> None:
    """The server has no authentication, so only loopback addresses are allowed."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--host {host!r} is not a loopback address; allowed: 127.0.0.1, ::1, localhost")


def base_url(host: str, port: int) -> str:
    """http://host:port, bracketing IPv6 literals."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_healthy(url: str) -> bool:
    """Whether a Prefect server answers /api/health at `url`."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start_server(host: str, port: int, log_path: Path) -> subprocess.Popen:
    """`prefect server start` as a child process (telemetry off), output to `log_path`."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)  # the server must not try to talk to another server
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, server: subprocess.Popen, timeout: float, log_path: Path) -> None:
    """Block until the server at `url` is healthy; raise if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not server_healthy(url):
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"prefect server not healthy at {url} after {timeout:.0f}s; see {log_path}")
        time.sleep(1.0)


def stop(proc: subprocess.Popen | None) -> None:
    """Terminate a child process, killing it if it does not exit in 15 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options of `python -m flows.serve`."""
    parser = argparse.ArgumentParser(description="Local Prefect UI serving the unlearning pipeline.")
    parser.add_argument("--port", type=int, default=4200, help="Prefect server port (default 4200)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address only (default 127.0.0.1)")
    parser.add_argument("--cron", default=None, help="optional schedule, e.g. '0 3 * * *'")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM behaves like Ctrl-C so the server child is stopped on the way out."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Start (or reuse) the local Prefect server and serve deployment pipeline/unlearning."""
    args = parse_args(argv)
    check_loopback(args.host)
    url, server = base_url(args.host, args.port), None
    log_path = Path(os.environ["PREFECT_HOME"]) / "server.log"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not server_healthy(url):
            if port_taken(args.host, args.port):
                raise RuntimeError(f"{args.host}:{args.port} is in use by something that is not a Prefect server")
            server = start_server(args.host, args.port, log_path)
            wait_healthy(url, server, HEALTH_TIMEOUT_S, log_path)
        os.environ["PREFECT_API_URL"] = f"{url}/api"  # inherited by flow runs and the DVC stages
        write_text(server_record(), f"{url}/api\n")  # `unlearn` finds this server without PREFECT_API_URL
        restore_worktree(ROOT, logging.getLogger("flows.serve"))  # a run killed with the previous server
        print(f"Prefect UI: {url}  deployments: pipeline/{DEPLOYMENT}, deletion-request/{REQUEST_DEPLOYMENT}\n"
              f"CLI against it: unlearn prefect deployment ls", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: f"{url}/api"}):
            serve(*deployments(args.cron), limit=1, print_starting_message=False)  # one run at a time per workspace
    except KeyboardInterrupt:
        pass
    finally:
        server_record().unlink(missing_ok=True)
        stop(server)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
