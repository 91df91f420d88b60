"""tools.all_methods: what an earlier run of the preset did is read from its worktree and carried into a new one."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.all_methods import DEFAULT, REPORTS, carry, copy_reports, dvc_executable, run_state


def git(repo: Path, *args: str) -> None:
    """git in `repo` with a fixed identity."""
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=repo, check=True,
                   capture_output=True)


def lock(stages: dict[str, str]) -> str:
    """A dvc.lock whose stages each record one output digest."""
    entries = {name: {"cmd": f"run {name}", "outs": [{"path": name, "md5": md5}]} for name, md5 in stages.items()}
    return yaml.safe_dump({"schema": "2.0", "stages": entries}, sort_keys=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A committed project: stages a and b in dvc.lock, one committed metrics file."""
    repo = tmp_path / "project"
    (repo / "metrics").mkdir(parents=True)
    (repo / "dvc.lock").write_text(lock({"a": "1", "b": "2"}))
    (repo / "metrics" / "kept.json").write_text("{}\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


def test_an_earlier_run_hands_over_its_stages_and_uncached_outputs(project: Path, tmp_path: Path) -> None:
    """Only the lock entries the run changed or added, and only the metrics / reports it wrote, are carried; a
    stage the new commit already holds as committed is not overwritten by the old one."""
    old = tmp_path / "old"
    git(project, "worktree", "add", "-q", "--detach", str(old))
    (old / "dvc.lock").write_text(lock({"a": "1", "b": "22", "c": "3"}))  # b rerun, c new
    (old / "metrics" / "c.json").write_text('{"c": 3}\n')
    (old / "reports").mkdir()
    (old / "reports" / "c.md").write_text("# c\n")
    (old / "scratch.txt").write_text("not an output\n")
    stages, files = run_state(old)
    assert set(stages) == {"b", "c"} and stages["b"]["outs"][0]["md5"] == "22"
    assert set(files) == {"metrics/c.json", "reports/c.md"}

    (project / "dvc.lock").write_text(lock({"a": "11", "b": "2"}))  # a new commit reran a
    git(project, "commit", "-qam", "next")
    new = tmp_path / "new"
    git(project, "worktree", "add", "-q", "--detach", str(new))
    carry(new, stages, files)
    carried = yaml.safe_load((new / "dvc.lock").read_text())["stages"]
    assert {name: entry["outs"][0]["md5"] for name, entry in carried.items()} == {"a": "11", "b": "22", "c": "3"}
    assert (new / "metrics" / "c.json").read_text() == '{"c": 3}\n' and (new / "reports" / "c.md").is_file()
    assert not (new / "scratch.txt").exists()


def test_a_lock_cut_short_by_a_kill_starts_over(project: Path, tmp_path: Path) -> None:
    """An unreadable dvc.lock in the old worktree: nothing is carried (DVC reruns what it must)."""
    old = tmp_path / "old"
    git(project, "worktree", "add", "-q", "--detach", str(old))
    (old / "dvc.lock").write_text(lock({"a": "1", "b": "22"})[:-12] + ": [\n")
    (old / "metrics" / "c.json").write_text("{}\n")
    assert run_state(old) == ({}, {})


def test_dvc_is_found_beside_the_interpreter() -> None:
    """The venv's dvc, not whatever PATH holds first."""
    assert Path(dvc_executable()) == Path(sys.executable).parent / "dvc"


def test_the_reports_and_figures_of_the_targets_run_are_copied_with_their_origin(tmp_path: Path) -> None:
    """Each target's report comes headed by the commit that made it, with its figure; a target not run is not
    copied; the calibration searches run only when named (GPU-sized)."""
    dest, out = tmp_path / "worktree", tmp_path / "out"
    for source, _ in REPORTS.values():
        (dest / source).parent.mkdir(parents=True, exist_ok=True)
        (dest / source).write_text(f"# {source}\n")
    (dest / "reports" / "calibration.png").write_bytes(b"png")
    copied = copy_reports(dest, ["causal_report", "calibration_report"], "abcdef0123", out)
    assert sorted(p.name for p in copied) == ["calibration.md", "calibration.png", "causal.md"]  # no causal figure
    text = (out / "calibration.md").read_text()
    assert text.startswith("<!-- reports/calibration.md of `make run-all-methods`") and "at abcdef0" in text
    assert text.endswith("# reports/calibration.md\n") and (out / "calibration.png").read_bytes() == b"png"
    assert "calibration_report" in REPORTS and "calibration_report" not in DEFAULT
