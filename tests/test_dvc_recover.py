"""tools.dvc_recover: a dvc.lock or rwlock that a killed `dvc repro` cut short is put back, and DVC runs again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.dvc_recover import COPY, LOCK, RWLOCK, lock_readable, lock_stages, recover


def git(repo: Path, *args: str) -> None:
    """git in `repo` with a fixed identity."""
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=repo, check=True,
                   capture_output=True)


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The venv's dvc in `repo`, analytics off."""
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repo with a two-stage pipeline reproduced and committed (dvc.lock in git HEAD)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    assert dvc(repo, "init", "-q").returncode == 0
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  first:\n    cmd: python -c \"open('a.txt','w').write('a')\"\n    outs: [a.txt]\n"
        "  second:\n    cmd: python -c \"open('b.txt','w').write(open('a.txt').read()*2)\"\n"
        "    deps: [a.txt]\n    outs: [b.txt]\n")
    result = dvc(repo, "repro")
    assert result.returncode == 0, result.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "ran")
    return repo


def cut(data: bytes) -> bytes:
    """dvc.lock cut mid-key, as a kill during DVC's in-place write leaves it."""
    short = data[:data.rindex(b"md5:") + 2]
    assert not lock_readable(short)  # the case under test: DVC cannot load it
    return short


def test_a_readable_lock_is_kept_and_copied(repo: Path) -> None:
    """Nothing to settle: dvc.lock is untouched, its copy made, nothing said."""
    before = (repo / LOCK).read_bytes()
    assert recover(repo) == []
    assert (repo / LOCK).read_bytes() == before == (repo / COPY).read_bytes()


def test_a_cut_lock_is_restored_from_the_copy_and_dvc_runs_again(repo: Path) -> None:
    """The copy taken before the interrupted run goes back; `dvc status` fails before, and after it DVC reports the
    pipeline up to date (the copy matches the outputs on disk)."""
    recover(repo)
    good = (repo / LOCK).read_bytes()
    (repo / LOCK).write_bytes(cut(good))
    assert dvc(repo, "status").returncode != 0
    said = recover(repo)
    assert len(said) == 1 and "before that run began" in said[0]
    assert (repo / LOCK).read_bytes() == good
    result = dvc(repo, "repro")
    assert result.returncode == 0 and "Running stage" not in result.stdout, result.stdout


@pytest.mark.parametrize("where", ["empty", "line end"])
def test_a_lock_cut_where_it_still_parses_is_restored_from_the_copy(repo: Path, where: str) -> None:
    """DVC opens dvc.lock with "w": a kill leaves it empty, or cut at a line end, where it still parses and passes
    the schema but has lost the stages after the cut (the CI failure of stop 28: every later stage ran again and a
    test read a stage that was gone). Either is put back from the copy; the copy itself is not overwritten by it."""
    recover(repo)
    good = (repo / LOCK).read_bytes()
    short = b"" if where == "empty" else good[:good.index(b"  second:")]
    assert where == "empty" or lock_stages(short) == {"first"}
    (repo / LOCK).write_bytes(short)
    said = recover(repo)
    assert len(said) == 1 and "before that run began" in said[0], said
    assert (repo / LOCK).read_bytes() == good == (repo / COPY).read_bytes()
    result = dvc(repo, "repro")
    assert result.returncode == 0 and "Running stage" not in result.stdout, result.stdout


def test_a_stage_dvc_yaml_no_longer_defines_is_not_brought_back(repo: Path) -> None:
    """`dvc remove second` drops its lock entry: the lock lacks a stage of the copy, but dvc.yaml no longer defines
    it, so the lock is whole; kept, and becomes the copy."""
    recover(repo)
    assert dvc(repo, "remove", "second").returncode == 0
    assert lock_stages((repo / LOCK).read_bytes()) == {"first"}
    assert recover(repo) == []
    assert lock_stages((repo / COPY).read_bytes()) == {"first"}


def test_without_a_copy_git_heads_lock_goes_back(repo: Path) -> None:
    """No copy (the run was not started through the make targets): git HEAD's dvc.lock."""
    committed = (repo / LOCK).read_bytes()
    (repo / LOCK).write_bytes(cut(committed))
    said = recover(repo)
    assert len(said) == 1 and "git HEAD" in said[0]
    assert (repo / LOCK).read_bytes() == committed


def test_with_no_readable_copy_anywhere_the_lock_is_removed_and_every_stage_reruns(repo: Path) -> None:
    """An unreadable copy, an unreadable committed lock: dvc.lock goes, and `dvc repro` rebuilds it (the first stage
    reruns; the second is restored from DVC's run cache, its dependency unchanged)."""
    bad = cut((repo / LOCK).read_bytes())
    (repo / LOCK).write_bytes(bad)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "cut")
    (repo / COPY).write_bytes(bad)
    said = recover(repo)
    assert len(said) == 1 and "removed" in said[0]
    assert not (repo / LOCK).exists()
    result = dvc(repo, "repro")
    assert result.returncode == 0 and "Running stage 'first'" in result.stdout, result.stdout
    assert set(yaml.safe_load((repo / LOCK).read_text())["stages"]) == {"first", "second"}


def test_an_unreadable_rwlock_is_removed_and_a_readable_one_kept(repo: Path) -> None:
    """DVC refuses to start on a cut rwlock; once removed it runs. A readable rwlock is DVC's business: kept."""
    readable = json.dumps({"read": {}, "write": {}})
    (repo / RWLOCK).write_text(readable)
    assert recover(repo) == []
    assert (repo / RWLOCK).read_text() == readable
    (repo / RWLOCK).write_text('{"read": {"a.txt": [{"pid": 1')
    assert dvc(repo, "repro").returncode != 0
    said = recover(repo)
    assert len(said) == 1 and "rwlock" in said[0]
    assert dvc(repo, "repro").returncode == 0


def test_the_command_line_says_one_line_per_file_and_exits_0(repo: Path) -> None:
    """`python -m tools.dvc_recover --repo R`: exit 0, one stderr line naming dvc.lock, no traceback."""
    (repo / LOCK).write_bytes(cut((repo / LOCK).read_bytes()))
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "tools.dvc_recover", "--repo", str(repo)], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "dvc.lock" in lines[0], lines
