"""Run a command against one Prefect server: `python -m tools.with_server [--port 4200] -- dvc repro ...`.

Without a server, every DVC stage's flow starts and stops its own temporary Prefect server (about 8 s of
each stage, measured: 5.5 s to start, 3 s to stop). This reuses a healthy server at 127.0.0.1:PORT (for
example `make ui`'s) or starts one on PREFECT_HOME's database (so the runs show in the UI afterwards), runs
the command with PREFECT_API_URL pointing at it, and stops the server if it started it. Exit code: the
command's; 2 when the port is held by something that is not a Prefect server.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import tasks  # noqa: F401  (telemetry off, PREFECT_HOME set)
from flows.serve import HEALTH_TIMEOUT_S, base_url, port_taken, server_healthy, start_server, stop, wait_healthy

HOST = "127.0.0.1"  # loopback only: the server has no authentication


def main(argv: list[str] | None = None) -> int:
    """Start or reuse the server, run the command, stop what was started; return the command's exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default 4200)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("error: no command given; usage: python -m tools.with_server [--port N] -- CMD ...", file=sys.stderr)
        return 2
    url, server = base_url(HOST, args.port), None
    if not server_healthy(url):
        if port_taken(HOST, args.port):
            print(f"error: port {args.port} on {HOST} is in use by something that is not a Prefect server; "
                  f"allowed: a free port or a Prefect server's (--port)", file=sys.stderr)
            return 2
        log_path = Path(os.environ["PREFECT_HOME"]) / "server.log"
        server = start_server(HOST, args.port, log_path)
        try:
            wait_healthy(url, server, HEALTH_TIMEOUT_S, log_path)
        except (RuntimeError, TimeoutError):
            stop(server)
            raise
    try:
        return subprocess.run(command, env={**os.environ, "PREFECT_API_URL": f"{url}/api"}).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
