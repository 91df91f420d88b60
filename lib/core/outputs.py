"""A stage's outputs replaced all at once: the previous ones are kept aside until the stage succeeds.

Every output in dvc.yaml is `persist: true`, so DVC leaves the previous outputs in place when it reruns a
stage (by default it deletes them first, and a failed run would leave nothing). The stage's entry point
then moves each previous output aside to a hidden sibling (`.<name>.previous`, a rename on the same file
system), runs, and either drops the asides (success) or removes what the failed run wrote and renames the
asides back (failure). A run killed outright (SIGKILL, power loss) leaves its asides behind; the next run of
the stage puts them back before it starts, and removes the temporary siblings (`.<name>.*`) that the atomic
writers of lib.core.io leave when they are killed. The outputs of a stage are the ones dvc.lock records for
its command: a stage never run under DVC has none yet, so there is nothing to keep.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import yaml

ASIDE = ".previous"  # suffix of the hidden sibling holding a previous output during a run


def outputs_by_command(lock_file: Path) -> dict[str, list[Path]]:
    """Every stage's outputs as dvc.lock records them, keyed by its command (whitespace normalised); one read."""
    if not lock_file.is_file():
        return {}
    lock: Any = yaml.load(lock_file.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    stages = (lock or {}).get("stages") or {}
    return {" ".join(str(stage.get("cmd", "")).split()):
            [lock_file.parent / out["path"] for out in stage.get("outs") or [] if isinstance(out, dict) and "path" in out]
            for stage in stages.values() if isinstance(stage, dict)}


def locked_outputs(lock_file: Path, cmd: str) -> list[Path]:
    """The outputs dvc.lock records for the stage whose command is `cmd` (none when no stage matches)."""
    return outputs_by_command(lock_file).get(" ".join(cmd.split()), [])


def all_locked_outputs(lock_file: Path) -> list[Path]:
    """Every output dvc.lock records, of every stage."""
    return [out for outs in outputs_by_command(lock_file).values() for out in outs]


def settle(outputs: Sequence[Path]) -> None:
    """Asides another stage's killed run left (DVC runs that stage again only if its outputs changed): where the
    run had written its output whole (atomic writes), the output stays and the aside goes; where it had not, the
    aside goes back. DVC then judges each output by its hash, as for any other."""
    for out in outputs:
        aside = aside_of(out)
        if not (aside.exists() or aside.is_symlink()):
            continue
        if out.exists() or out.is_symlink():
            _remove(aside)
        else:
            os.replace(aside, out)
        for tmp in out.parent.glob(f".{out.name}.*"):  # an atomic writer's temporary sibling, cut short
            _remove(tmp)


def aside_of(path: Path) -> Path:
    """The hidden sibling a previous output waits in while its stage runs."""
    return path.with_name(f".{path.name}{ASIDE}")


def _remove(path: Path) -> None:
    """Delete a file, link or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover(outputs: Sequence[Path]) -> list[Path]:
    """Undo a killed run: put each aside back over whatever the run left, drop the atomic writers' temporary
    siblings; return the outputs restored."""
    restored = []
    for out in outputs:
        aside = aside_of(out)
        if aside.exists() or aside.is_symlink():
            _remove(out)
            os.replace(aside, out)
            restored.append(out)
        if out.parent.is_dir():
            for tmp in out.parent.glob(f".{out.name}.*"):  # lib.core.io's mkdtemp / mkstemp prefix
                _remove(tmp)
    return restored


def set_aside(outputs: Sequence[Path]) -> list[Path]:
    """Move each existing output to its aside; return the ones moved."""
    moved = []
    for out in outputs:
        if out.exists() or out.is_symlink():
            os.replace(out, aside_of(out))
            moved.append(out)
    return moved


def commit(outputs: Sequence[Path]) -> None:
    """The run succeeded: drop the asides."""
    for out in outputs:
        _remove(aside_of(out))


def roll_back(outputs: Sequence[Path]) -> None:
    """The run failed: remove what it wrote and put the previous outputs back, as they were before it started (an
    output that was absent then is absent again)."""
    for out in outputs:
        aside = aside_of(out)
        _remove(out)
        if aside.exists() or aside.is_symlink():
            os.replace(aside, out)
