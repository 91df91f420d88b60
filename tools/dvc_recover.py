"""Before `dvc repro`: keep a copy of a readable dvc.lock, or put one back when a killed run cut DVC's own writes.

DVC rewrites dvc.lock in place after each stage and its read/write lock (.dvc/tmp/rwlock) in place as each stage
starts and ends (treeverse/dvc#6097, #7615). A run killed in that moment (SIGKILL, power loss) leaves the file cut
short, and every later `dvc` command stops on it. Our stages survive a kill (flows.kept_outputs); this settles DVC's
files, so that rerunning the same command resumes:

- dvc.lock whole (DVC's lock-file schema, and no stage of the copy that dvc.yaml still defines missing): copied
  to .dvc/tmp/unlearn-dvc.lock;
- dvc.lock cut (DVC opens it with "w", so a kill can leave it empty, or cut at a line end, where it still parses
  but has lost the stages after the cut): replaced by that copy (the state before the interrupted repro began: the
  stages it finished run again, mostly from the Prefect task cache), else by git HEAD's dvc.lock, else removed;
- .dvc/tmp/rwlock unreadable: removed (it only records which running `dvc` holds which path; once cut short it
  names none DVC can check, and DVC refuses to start until it is gone).

    python -m tools.dvc_recover [--repo .]

`make run` and the other run targets call it first. One line on stderr per file it replaced; exit code 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

LOCK, COPY, RWLOCK = Path("dvc.lock"), Path(".dvc") / "tmp" / "unlearn-dvc.lock", Path(".dvc") / "tmp" / "rwlock"


def lock_readable(data: bytes) -> bool:
    """Whether `data` is a dvc.lock DVC writes: a YAML mapping with its schema version that passes DVC's own
    lock-file schema (an empty file parses, but DVC never writes one)."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from voluptuous import Invalid

    try:
        loaded = yaml.safe_load(data.decode("utf-8"))
        if not isinstance(loaded, dict) or "schema" not in loaded:
            return False
        COMPILED_LOCKFILE_SCHEMA(loaded)
    except (yaml.YAMLError, UnicodeDecodeError, Invalid):
        return False
    return True


def lock_stages(data: bytes) -> set[str]:
    """The stage names a readable dvc.lock records."""
    return set(yaml.safe_load(data.decode("utf-8")).get("stages") or {})


def defined_stages(repo: Path) -> set[str]:
    """The stage names the top dvc.yaml defines now (the keys of dvc.lock), foreach items expanded (DVC's own
    reading of it)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    top = (repo / "dvc.yaml").resolve()
    try:
        with Repo(str(repo)) as dvc_repo:
            return {stage.name for stage in dvc_repo.index.stages if Path(stage.dvcfile.path).resolve() == top}
    except DvcException:  # dvc.yaml itself broken: `dvc repro` says so; nothing here to restore from
        return set()


def lost_stages(repo: Path, data: bytes) -> set[str]:
    """Stages the kept copy records that the readable dvc.lock `data` lacks and dvc.yaml still defines: what a cut
    at a line end loses (`dvc repro` only adds and updates entries; `dvc remove` drops only undefined ones)."""
    copy = repo / COPY
    kept = copy.read_bytes() if copy.is_file() else b""
    lost = lock_stages(kept) - lock_stages(data) if lock_readable(kept) else set()
    return lost & defined_stages(repo) if lost else set()


def rwlock_readable(data: bytes) -> bool:
    """Whether `data` is a JSON object (what DVC's rwlock must parse to)."""
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def committed_lock(repo: Path) -> bytes | None:
    """git HEAD's dvc.lock, or None (no git, no commit, not tracked)."""
    shown = subprocess.run(["git", "show", f"HEAD:{LOCK}"], cwd=repo, capture_output=True)
    return shown.stdout if shown.returncode == 0 else None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def restore_lock(repo: Path) -> str:
    """Put the first readable of the kept copy and git HEAD's dvc.lock over a cut one (git asked only when the copy
    will not do), else remove it; what was done."""
    lock, copy, cut = repo / LOCK, repo / COPY, f"{LOCK} was cut short by an interrupted run"
    kept = copy.read_bytes() if copy.is_file() else None
    if kept is not None and lock_readable(kept):
        write_atomic(lock, kept)
        return f"{cut}: restored as it was before that run began (the stages that run finished rerun)"
    committed = committed_lock(repo)
    if committed is not None and lock_readable(committed):
        write_atomic(lock, committed)
        return f"{cut}: restored from git HEAD (the stages run since rerun)"
    lock.unlink()
    return f"{cut} and has no readable copy: removed"


def recover(repo: Path) -> list[str]:
    """Copy or restore dvc.lock, remove an unreadable rwlock; one message per file replaced."""
    said: list[str] = []
    lock, copy, rwlock = repo / LOCK, repo / COPY, repo / RWLOCK
    if rwlock.is_file() and not rwlock_readable(rwlock.read_bytes()):
        rwlock.unlink()
        said.append(f"{RWLOCK} was cut short by an interrupted run: removed")
    if lock.is_file():
        data = lock.read_bytes()
        if lock_readable(data) and not lost_stages(repo, data):
            if copy.parent.is_dir():
                write_atomic(copy, data)
        else:
            said.append(restore_lock(repo))
    return said


def main(argv: list[str] | None = None) -> int:
    """Settle the repo's DVC files; print what was replaced."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    args = parser.parse_args(argv)
    for line in recover(args.repo):
        print(f"dvc_recover: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
