"""`make run-all-methods`: every method on every track (presets/all_methods.yaml); its reports into reports/all_methods/.

The preset adds about an hour to `make run` on 2 CPU cores, so it runs beside the project, not in it: a git
worktree of HEAD at ../<project>-all-methods (a sibling, so relative params such as benchmarks.data_root resolve
as here) that shares this project's DVC cache through hard links (nothing is copied), with the preset applied.
`dvc repro` there restores every stage this project already ran from the shared cache (the stages' deps and
params are the same) and runs the new methods' stages; then the reports it wrote are copied to
reports/all_methods/ (masked.md, causal.md, bench.md, robustness.md: every model attacked) and its stage times to reports/all_methods/timings.md.
README's "Every method on every track" blocks are generated from them (`make readme`).

    python -m tools.all_methods [--port 4312] [--targets report causal_report ...]

--targets runs some tracks only (default: the four tracks' reports; robustness_report, the attack stages, costs
about 20 minutes more on 2 cores). calibration_report (every method's seeded search for its point at equal
forgetting on every track: reports/all_methods/calibration.md and .png) runs only when named: it is GPU-sized. A worktree left at the same commit by an earlier (interrupted) run is reused as
it is; one left at another commit is recreated with its dvc.lock and the metrics and reports it wrote carried
over, so DVC reruns only the stages whose code or params changed since (the others' cached outputs are
checked out from the shared cache).
The worktree's stages use this project's Prefect task cache (UNLEARN_ROOT), so runs already computed here
(the experiments stage's) come back cached.

Runs what HEAD holds: commit first. Exit code: dvc repro's (nothing is copied when it fails).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from tools.dvc_recover import recover

ROOT = Path(__file__).resolve().parents[1]
PRESET = "all_methods"
REPORTS = {"report": ("reports/results.md", "masked.md"), "causal_report": ("reports/causal/results.md", "causal.md"),
           "bench_report": ("reports/bench/results.md", "bench.md"),
           "robustness_report": ("reports/robustness.md", "robustness.md"),
           "calibration_report": ("reports/calibration.md", "calibration.md")}  # target -> what it writes, copied as
FIGURES = {"causal_report": ("reports/causal/mia.png", "causal_mia.png"),
           "calibration_report": ("reports/calibration.png", "calibration.png")}
DEFAULT = ("report", "causal_report", "bench_report", "robustness_report")  # calibration only when named: GPU-sized
OUT = ROOT / "reports" / "all_methods"


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run a command in `cwd` (output shown); its exit code."""
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env).returncode


def run_state(dest: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """What an earlier run did: the dvc.lock entries of the stages it ran, and the metrics / reports it wrote (the
    outputs DVC does not cache), by path."""
    listed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "-z"], cwd=dest,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    paths = [entry[3:] for entry in listed if len(entry) > 3]
    files = {rel: (dest / rel).read_bytes() for rel in paths
             if rel.startswith(("metrics/", "reports/")) and (dest / rel).is_file()}
    committed = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=dest, capture_output=True,
                                              text=True, check=True).stdout)["stages"]
    try:
        ran = yaml.safe_load((dest / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    except (yaml.YAMLError, KeyError, TypeError):  # a run killed while DVC wrote its lock: start over
        return {}, {}
    return {name: entry for name, entry in ran.items() if committed.get(name) != entry}, files


def carry(dest: Path, stages: dict[str, Any], files: dict[str, bytes]) -> None:
    """Put an earlier run's stages into the new worktree's dvc.lock (DVC checks each against the new code and
    params: a changed stage reruns) and its uncached outputs back in place."""
    lock = yaml.safe_load((dest / "dvc.lock").read_text(encoding="utf-8"))
    lock["stages"].update(stages)
    (dest / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False), encoding="utf-8")
    for rel, data in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)


def worktree(dest: Path) -> str:
    """A fresh detached worktree of HEAD at `dest` sharing this project's DVC cache; HEAD's commit."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    if dest.exists():
        at = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True).stdout.strip()
        if at == head:  # an earlier run's progress (its dvc.lock, outputs) is kept: dvc repro goes on from there
            share_cache(dest)
            return head
        stages, files = run_state(dest)
        sh(["git", "worktree", "remove", "--force", str(dest)], ROOT)
    else:
        stages, files = {}, {}
    if sh(["git", "worktree", "add", "--detach", str(dest), head], ROOT):
        raise RuntimeError(f"git worktree add {dest} failed")
    carry(dest, stages, files)
    share_cache(dest)
    return head


def share_cache(dest: Path) -> None:
    """Point the worktree's DVC at this project's cache (hard links), check out what this project ran; idempotent:
    a worktree whose setup was interrupted is completed."""
    dvc = dvc_executable()
    for args in (["cache", "dir", "--local", str(ROOT / ".dvc" / "cache")],
                 ["config", "--local", "cache.type", "hardlink,symlink"], ["config", "--local", "core.analytics", "false"]):
        if sh([dvc, *args], dest):
            raise RuntimeError(f"dvc {' '.join(args)} failed in {dest}")
    sh([dvc, "checkout", "--allow-missing", "-q"], dest)


def dvc_executable() -> str:
    """The dvc beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    found = str(beside) if beside.is_file() else shutil.which("dvc")
    if found is None:
        raise SystemExit("error: dvc not found beside this python or on PATH; allowed: the project's venv "
                         "(make run-all-methods)")
    return found


def copy_reports(dest: Path, targets: list[str], head: str, out: Path) -> list[Path]:
    """Copy the reports (each headed by where it came from) and figures the targets wrote in `dest` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for target in targets:
        source, name = REPORTS[target]
        text = (dest / source).read_text(encoding="utf-8")
        (out / name).write_text(f"<!-- {source} of `make run-all-methods` (presets/{PRESET}.yaml) at {head[:7]} -->\n"
                                f"{text}", encoding="utf-8")
        copied.append(out / name)
        figure, as_name = FIGURES.get(target, ("", ""))
        if figure and (dest / figure).is_file():
            copied.append(Path(shutil.copy2(dest / figure, out / as_name)))
    return copied


def main(argv: list[str] | None = None) -> int:
    """Run the preset in the sibling worktree; copy its reports and stage times here."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4312, help="the worktree's Prefect server port (default 4312)")
    parser.add_argument("--targets", nargs="+", choices=list(REPORTS), default=list(DEFAULT),
                        help=f"the report stages to reproduce (default: {' '.join(DEFAULT)})")
    args = parser.parse_args(argv)
    targets = list(args.targets)
    dest = ROOT.parent / f"{ROOT.name}-all-methods"
    head = worktree(dest)
    python = sys.executable
    env = {**os.environ, "PREFECT_HOME": str(dest / ".prefect"), "UNLEARN_ROOT": str(ROOT),
           "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}"}
    if sh([python, "-m", "flows.preset", PRESET], dest, env):
        return 2
    for line in recover(dest):  # an earlier run killed inside DVC's own write of dvc.lock / rwlock
        print(f"dvc_recover: {line}", file=sys.stderr)
    start, began = datetime.now(timezone.utc), time.perf_counter()
    code = sh([python, "-m", "tools.with_server", "--port", str(args.port), "--", "dvc", "repro", *targets], dest, env)
    if code:
        return code
    copy_reports(dest, targets, head, OUT)
    title = f"make run-all-methods at {head[:7]}, {start:%Y-%m-%d} (stages the project had not run)"
    return sh([python, "-m", "tools.timings", "--since", start.strftime("%Y-%m-%dT%H:%M:%S"), "--title", title,
               "--wall", f"{time.perf_counter() - began:.0f}", "--out", str(OUT / "timings.md")], dest, env)


if __name__ == "__main__":
    sys.exit(main())
