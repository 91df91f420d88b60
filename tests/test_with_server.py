"""tools.with_server: one real Prefect server for a whole command, started, used, reused and stopped."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import os, urllib.request; url = os.environ['PREFECT_API_URL']; "
         "print(url, urllib.request.urlopen(url + '/health', timeout=5).status)")


def with_server(args: list[str], home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m tools.with_server ARGS` from the repo root with its own PREFECT_HOME."""
    full = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", **(env or {})}
    full.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "tools.with_server", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.integration
def test_command_sees_a_healthy_server_that_is_stopped_after(tmp_path: Path) -> None:
    port = free_port()
    result = with_server(["--port", str(port), "--", sys.executable, "-c", PROBE + "; raise SystemExit(3)"], tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]  # the command's exit code
    assert result.stdout.split() == [f"http://127.0.0.1:{port}/api", "200"]
    assert not listening(port)  # the server it started is gone


@pytest.mark.integration
def test_reuses_a_running_server(tmp_path: Path, prefect_api_url: str) -> None:
    port = int(prefect_api_url.rsplit(":", 1)[1].split("/")[0])
    result = with_server(["--port", str(port), "--", sys.executable, "-c", PROBE], tmp_path)
    assert result.returncode == 0 and result.stdout.split() == [prefect_api_url, "200"], result.stderr[-2000:]
    assert listening(port)  # not started here, so not stopped here


def test_port_held_by_something_else_and_missing_command_exit_2(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        held = with_server(["--port", str(port), "--", "true"], tmp_path)
    assert held.returncode == 2 and f"port {port}" in held.stderr and "Traceback" not in held.stderr
    assert len(held.stderr.strip().splitlines()) == 1
    empty = with_server(["--port", str(port)], tmp_path)
    assert empty.returncode == 2 and "no command given" in empty.stderr
