"""Shared fixtures: one real Prefect API server for every integration test of the session."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import torch

SERVER_START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll `<api>/health` until the server answers; fail early if the server process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout_s:.0f} s; see {log}")


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# the longest modules, first: `make test` (xdist, --dist loadscope, no reordering) hands one module at a time to
# whichever worker is nearly idle, so test_pipeline.py (one shared tiny repo, the longest) starts at once on one
# worker and the other worker starts the UI run, then the benchmark track's repo (test_pipeline_bench.py), then
# everything else (not --dist loadgroup: under pytest 9.2, xdist 3.8 tags grouped node ids through an attribute
# pytest no longer reads, so groups are split)
FIRST = ("tests/test_pipeline.py", "tests/test_serve.py", "tests/test_pipeline_bench.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the modules of FIRST to the front, in that order; the order inside each module stays."""
    def rank(item: pytest.Item) -> int:
        """The item's module's place in FIRST (after FIRST if absent)."""
        return next((i for i, name in enumerate(FIRST) if item.nodeid.startswith(name)), len(FIRST))

    items.sort(key=rank)


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker, torch gets one thread: two workers share the 2-core machine without oversubscribing."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


PREFECT_HOMES: dict[str, Path] = {}  # API URL -> PREFECT_HOME of the session's server (its database, for privacy tests)


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `prefect server start` once (saves each flow process its own ephemeral server)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the server must not try to talk to another server
    log = home / "server.log"
    prefect = Path(sys.executable).parent / "prefect"
    with open(log, "wb") as out:
        # own session: teardown signals exactly this server and the workers it spawns
        proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api_url, proc, log, SERVER_START_TIMEOUT_S)
        PREFECT_HOMES[api_url] = home
        yield api_url
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
