"""lib.core.worktree: a git work tree recorded, changed the way `dvc exp run` changes it, and put back exactly."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lib.core import worktree


def git(repo: Path, *args: str) -> str:
    """git in `repo` with a fixed identity; its stdout."""
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def snapshot(repo: Path) -> dict[str, object]:
    """Everything a user sees of the tree: status, staged and unstaged diffs, HEAD, and every file's bytes."""
    files = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return {"status": git(repo, "status", "--porcelain=v1", "-uall"), "staged": git(repo, "diff", "--cached"),
            "unstaged": git(repo, "diff"), "head": git(repo, "rev-parse", "HEAD"), "files": files}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo with a commit, a staged change, an unstaged change, a staged new file, an untracked and an ignored one."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("data/\n")
    (repo / "params.yaml").write_text("seed: 0\n")
    (repo / "dvc.lock").write_text("stages: {}\n")
    (repo / "metrics").mkdir()
    (repo / "metrics" / "a.json").write_text("{}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    (repo / "params.yaml").write_text("seed: 1\n")
    git(repo, "add", "params.yaml")
    (repo / "params.yaml").write_text("seed: 2\n")  # staged 1, on disk 2
    (repo / "notes.md").write_text("new, staged\n")
    git(repo, "add", "notes.md")
    (repo / "scratch.txt").write_text("untracked\n")
    (repo / "data").mkdir()
    (repo / "data" / "out.bin").write_bytes(b"ignored")
    return repo


def mess_up(repo: Path) -> None:
    """What a failed or cancelled `dvc exp run` leaves: params rewritten, lock and metrics changed and staged, new
    tracked and untracked files, a deleted tracked file."""
    (repo / "params.yaml").write_text("seed: 9\n")
    (repo / "dvc.lock").write_text("stages: {changed: 1}\n")
    (repo / "metrics" / "a.json").write_text('{"x": 1}\n')
    (repo / "metrics" / "b.json").write_text("{}\n")
    git(repo, "add", "-A")
    (repo / "metrics" / "c.json").write_text("{}\n")
    (repo / "notes.md").unlink()


def test_restore_puts_back_head_index_files_and_untracked(repo: Path) -> None:
    before = snapshot(repo)
    state = worktree.record(repo)
    assert snapshot(repo) == before  # recording changes nothing (no stash entry, no index change)
    assert git(repo, "stash", "list") == ""
    mess_up(repo)
    assert snapshot(repo) != before
    worktree.restore(repo, state)
    assert snapshot(repo) == before


def test_restore_from_a_saved_state_after_a_commit_on_top(repo: Path, tmp_path: Path) -> None:
    record = tmp_path / "state.json"
    before = snapshot(repo)
    worktree.save(worktree.record(repo), record)
    mess_up(repo)
    git(repo, "commit", "-qm", "experiment")  # a run that got as far as committing
    state = worktree.load(record)
    assert state is not None
    worktree.restore(repo, state)
    assert snapshot(repo) == before


def test_a_clean_tree_stays_clean(tmp_path: Path) -> None:
    repo = tmp_path / "clean"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a")
    state = worktree.record(repo)
    assert state.files == state.head  # nothing to stash
    (repo / "a.txt").write_text("b\n")
    (repo / "b.txt").write_text("b\n")
    worktree.restore(repo, state)
    assert git(repo, "status", "--porcelain") == "" and (repo / "a.txt").read_text() == "a\n"


def test_load_without_a_saved_state_is_none(tmp_path: Path) -> None:
    assert worktree.load(tmp_path / "none.json") is None
