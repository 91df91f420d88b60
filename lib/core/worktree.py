"""A git work tree put back as it was: the state of HEAD, the index and every tracked or untracked (not ignored)
file, recorded before a run that may change them (`dvc exp run` stages dvc.lock and metrics/) and restored if the
run fails, is cancelled or is killed."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class TreeState:
    """Where a work tree stood: HEAD, the index's tree, a commit of the tracked files as they were on disk (git stash
    create; HEAD when nothing differed), and the untracked files that git does not ignore."""

    head: str
    index: str
    files: str
    untracked: tuple[str, ...]


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its stdout without the trailing newline (a failure raises, naming the command)."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout.rstrip("\n")


def untracked(repo: Path) -> tuple[str, ...]:
    """Untracked files git does not ignore, sorted."""
    return tuple(sorted(p for p in git(repo, "ls-files", "--others", "--exclude-standard", "-z").split("\0") if p))


def record(repo: Path) -> TreeState:
    """The work tree's state now; changes nothing (no stash entry, no index change)."""
    head = git(repo, "rev-parse", "HEAD")
    return TreeState(head=head, index=git(repo, "write-tree"), files=git(repo, "stash", "create") or head,
                     untracked=untracked(repo))


def restore(repo: Path, state: TreeState) -> None:
    """Put HEAD, the tracked files, the index and the untracked files back as `state` recorded them."""
    if git(repo, "rev-parse", "HEAD") != state.head:
        git(repo, "reset", "-q", "--soft", state.head)
    git(repo, "read-tree", state.index)  # first: files the run added to the index are untracked again
    # the tracked files as they were on disk; one the user had deleted (absent from the record) is deleted again
    git(repo, "restore", f"--source={state.files}", "--worktree", "--", ".")
    for path in set(untracked(repo)) - set(state.untracked):  # written by the run, never by the user
        (repo / path).unlink(missing_ok=True)


def save(state: TreeState, path: Path) -> None:
    """Write `state` to `path` (written whole: a temp file renamed), so a killed run can still be undone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(asdict(state)), encoding="utf-8")
    os.replace(temp, path)


def load(path: Path) -> TreeState | None:
    """The state saved at `path`, or None when there is none."""
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return TreeState(head=raw["head"], index=raw["index"], files=raw["files"], untracked=tuple(raw["untracked"]))
