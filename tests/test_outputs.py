"""Stage outputs kept aside while a stage runs (lib.core.outputs): put back on failure or after a kill."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lib.core import outputs


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> text of every file under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def stage(tmp_path: Path) -> list[Path]:
    """A stage with a folder output, a file output and one that does not exist yet; dvc.lock naming them."""
    (tmp_path / "data/model").mkdir(parents=True)
    (tmp_path / "data/model/weights.bin").write_text("old weights")
    (tmp_path / "data/model/config.json").write_text("{}")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/m.json").write_text('{"old": 1}')
    lock = {"schema": "2.0", "stages": {
        "other": {"cmd": "python -m flows.other", "outs": [{"path": "data/other", "md5": "x"}]},
        "edit@snku": {"cmd": "python -m flows.edit  snku", "outs": [
            {"path": "data/model", "md5": "a.dir"}, {"path": "metrics/m.json", "md5": "b"},
            {"path": "data/new", "md5": "c.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    return outputs.locked_outputs(tmp_path / "dvc.lock", "python -m flows.edit snku")


def test_outputs_come_from_the_lock_entry_of_the_command(stage: list[Path], tmp_path: Path) -> None:
    """The stage is found by its command (spaces normalized); another command or no lock gives none."""
    assert [p.relative_to(tmp_path).as_posix() for p in stage] == ["data/model", "metrics/m.json", "data/new"]
    assert outputs.locked_outputs(tmp_path / "dvc.lock", "python -m flows.edit depn") == []
    assert outputs.locked_outputs(tmp_path / "absent.lock", "python -m flows.edit snku") == []


def write_new(root: Path) -> None:
    """What a run writes: a new folder, a new file, an output the stage never had before."""
    (root / "data/model").mkdir()
    (root / "data/model/weights.bin").write_text("new weights")
    (root / "metrics/m.json").write_text('{"new": 2}')
    (root / "data/new").mkdir()
    (root / "data/new/x").write_text("x")


def test_failure_puts_the_previous_outputs_back_exactly(stage: list[Path], tmp_path: Path) -> None:
    """After set_aside, a run that wrote part of its outputs and failed leaves the tree as it was before."""
    before = tree(tmp_path)
    assert outputs.set_aside(stage) == stage[:2]
    assert not (tmp_path / "data/model").exists() and (tmp_path / "data/.model.previous").is_dir()
    write_new(tmp_path)
    outputs.roll_back(stage)
    assert tree(tmp_path) == before
    assert not (tmp_path / "data/new").exists()


def test_success_drops_the_asides(stage: list[Path], tmp_path: Path) -> None:
    """After a successful run only the new outputs are left, no hidden sibling."""
    outputs.set_aside(stage)
    write_new(tmp_path)
    outputs.commit(stage)
    assert (tmp_path / "data/model/weights.bin").read_text() == "new weights"
    assert not (tmp_path / "data/model/config.json").exists()
    hidden = [p.name for p in tmp_path.rglob(".*") if p.is_dir() or p.suffix != ".lock"]
    assert hidden == []


def test_a_killed_run_is_undone_at_the_next_start(stage: list[Path], tmp_path: Path) -> None:
    """A run killed after set_aside left asides, half outputs and atomic writers' temp siblings; recover puts the
    previous outputs back and removes the rest."""
    before = tree(tmp_path)
    outputs.set_aside(stage)
    (tmp_path / "data/model").mkdir()  # half written
    (tmp_path / "data/.model.k3j2x").mkdir()  # lib.core.io.atomic_dir's temporary sibling
    (tmp_path / "metrics/.m.json.a8d.tmp").write_text("partial")  # atomic_path's
    assert outputs.recover(stage) == stage[:2]
    assert tree(tmp_path) == before
    assert outputs.recover(stage) == []  # nothing left to undo


def test_an_output_that_was_never_there_stays_absent_after_failure(tmp_path: Path) -> None:
    """No previous output: a failed run's output is removed, not kept half-done."""
    out = tmp_path / "data/fresh"
    assert outputs.set_aside([out]) == []
    out.mkdir(parents=True)
    outputs.roll_back([out])
    assert not out.exists()


def test_another_stages_killed_run_is_settled(stage: list[Path], tmp_path: Path) -> None:
    """A run killed after it wrote its output whole leaves output and aside; DVC skips the stage when the output's
    hash is unchanged, so the next stage to run settles it: the output stays, the aside goes; an aside whose
    output was never written goes back."""
    everything = outputs.all_locked_outputs(tmp_path / "dvc.lock")
    assert set(everything) == {*stage, tmp_path / "data/other"}
    outputs.set_aside(stage)
    (tmp_path / "metrics/m.json").write_text('{"new": 1}')  # written whole before the kill; data/model was not
    (tmp_path / "data/.model.tmp1234").mkdir()  # its atomic writer's temporary folder, cut short
    outputs.settle(everything)
    assert (tmp_path / "metrics/m.json").read_text() == '{"new": 1}'
    assert (tmp_path / "data/model/weights.bin").read_text() == "old weights"
    assert not list(tmp_path.rglob(f"*{outputs.ASIDE}")) and not (tmp_path / "data/.model.tmp1234").exists()
