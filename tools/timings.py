"""Per-stage wall-clock table of a pipeline run, read from Prefect's run records (never typed by hand).

Every DVC stage runs one Prefect flow (flows.main), and Prefect records each flow run's name, parameters,
start and end in its database (PREFECT_HOME, `.prefect/` here). This reads the completed flow runs that
started in a time window and writes a Markdown table, one row per stage (flow name + its arguments), in
start order, with the total.

    python -m tools.timings --since 2026-12-04T18:08 [--until ...] [--out reports/timings.md]

The times are the flows' own run times: a stage's process start and imports (a few seconds each) are not
in them, so the measured wall clock of the whole `dvc repro` (printed by whoever ran it) is the budget
figure, and this table says where it went.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import tasks  # noqa: F401  (telemetry off, PREFECT_HOME set before prefect is imported)
from flows import stage_name

PAGE = 200  # flow runs per API request


@dataclass(frozen=True)
class StageTime:
    """One completed flow run: the stage it ran, when it started, how long it took."""

    stage: str
    started: datetime
    seconds: float


def parse_time(text: str) -> datetime:
    """An ISO time; naive times are UTC."""
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def read_runs(since: datetime, until: datetime | None) -> list[StageTime]:
    """Completed flow runs that started in [since, until), from Prefect's database."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    window = FlowRunFilterStartTime(after_=since, before_=until)
    completed = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:  # the API pages its answers
            page = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=window, state=completed),
                                         limit=PAGE, offset=len(runs))
            runs += page
            if len(page) < PAGE:
                break
        flows = {f.id: f.name for f in client.read_flows()}
    return sorted((StageTime(stage_name(flows.get(r.flow_id, "?"), r.parameters), r.start_time,
                             r.total_run_time.total_seconds()) for r in runs if r.start_time is not None),
                  key=lambda t: t.started)


def table(times: Iterable[StageTime]) -> str:
    """Markdown: stage, start (UTC), seconds, minutes; then the total."""
    rows = list(times)
    lines = ["| Stage (flow and arguments) | started (UTC) | s | min |", "|---|---|---|---|"]
    lines += [f"| {t.stage} | {t.started:%H:%M:%S} | {t.seconds:.0f} | {t.seconds / 60:.1f} |" for t in rows]
    total = sum(t.seconds for t in rows)
    lines.append(f"| **total ({len(rows)} flow runs)** | | **{total:.0f}** | **{total / 60:.1f}** |")
    return "\n".join(lines) + "\n"


TRACKS = (("causal-attack", "attacks"), ("masked-attack", "attacks"), ("robustness-report", "attacks"),
          ("causal-", "causal LM"), ("bench-", "benchmarks"))  # the first prefix that matches names the track


def track(stage: str) -> str:
    """The track a stage belongs to, from its flow name: the attack flows, causal-*, bench-*, else masked LM."""
    return next((name for prefix, name in TRACKS if stage.startswith(prefix)), "masked LM")


def by_track(times: Iterable[StageTime], wall: float | None = None) -> str:
    """Markdown: per track, its flow runs, the sum of their times and its share; the total, and the measured
    wall clock of the whole run when given (process starts and imports are the difference)."""
    rows = list(times)
    sums: dict[str, list[float]] = {}
    for t in rows:
        sums.setdefault(track(t.stage), []).append(t.seconds)
    total = sum(t.seconds for t in rows)
    lines = ["| Track | flow runs | s | min |", "|---|---|---|---|"]
    lines += [f"| {name} | {len(s)} | {sum(s):.0f} | {sum(s) / 60:.1f} |" for name, s in sums.items()]
    lines.append(f"| **all stages** | **{len(rows)}** | **{total:.0f}** | **{total / 60:.1f}** |")
    if wall is not None:
        lines.append(f"| **wall clock of the whole run** | | **{wall:.0f}** | **{wall / 60:.1f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the table of the runs in the window."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", required=True, help="ISO start of the window (UTC unless it says otherwise)")
    parser.add_argument("--until", default=None, help="ISO end of the window (default: now)")
    parser.add_argument("--title", default="Stage times", help="heading above the table")
    parser.add_argument("--out", type=Path, default=None, help="write the table to this Markdown file")
    parser.add_argument("--wall", type=float, default=None,
                        help="the measured wall clock of the whole run in seconds (for example from /usr/bin/time)")
    args = parser.parse_args(argv)
    try:
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else None
    except ValueError as err:
        print(f"error: {err}; allowed: an ISO time such as 2026-12-04T18:08", file=sys.stderr)
        return 2
    runs = read_runs(since, until)
    if not runs:
        print(f"error: no completed flow run started after {since:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
        return 2
    text = f"## {args.title}: per track\n\n{by_track(runs, args.wall)}\n## {args.title}: per stage\n\n{table(runs)}"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
