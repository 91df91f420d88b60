"""A versioned model under deletion requests: a base model, its patches, the ledger and the committed head.

    <root>/ledger.jsonl          hash-chained entries (lib.deletion.ledger), one per applied request or rollback
    <root>/patches/<seq>.safetensors
    <root>/HEAD.json             {"seq", "hash", "child"}: the last committed entry; written last, atomically
    <root>/lock                  held (flock) by whoever changes the store: concurrent requests run one by one

Version n of the model is the base with patches 0..n applied in order. Committing a request writes its patch,
appends its ledger entry, then replaces HEAD.json: HEAD is the commit point. A process killed before HEAD
changed leaves an entry (or half a line) past the head, which the next `locked` store drops, so the model
stays at its previous version and the ledger holds no entry for the killed request. A rollback is a request
too: the inverse patch of the version it undoes, appended like any other (the ledger is never rewritten).
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from torch import nn

from lib.core.editing import Edit, LayerPatch, NeuronPatch, WeightDelta
from lib.core.io import file_digest, read_json, write_json
from lib.deletion import ledger
from lib.deletion.patch import apply_patch, load_patch, model_digest, save_patch


@dataclass(frozen=True)
class Head:
    """The last committed entry: its seq (-1: the base model), hash, and the model digest it leads to."""

    seq: int
    hash: str
    child: str


class Store:
    """One versioned model's folder (see the module docstring); methods that change it need `locked()`."""

    def __init__(self, root: str | Path, base_digest: str) -> None:
        """Open (or start) the store of the base model with digest `base_digest`."""
        self.root = Path(root)
        self.base_digest = base_digest
        self.ledger = self.root / "ledger.jsonl"
        self.patches = self.root / "patches"
        self._held = False

    @contextmanager
    def locked(self) -> Iterator["Store"]:
        """Hold the store's lock (blocking) and drop whatever a killed request left past the head."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = True
            try:
                self._recover()
                yield self
            finally:
                self._held = False
                fcntl.flock(handle, fcntl.LOCK_UN)

    def head(self) -> Head:
        """The committed head (the base model when nothing was committed)."""
        path = self.root / "HEAD.json"
        if not path.is_file():
            return Head(-1, ledger.GENESIS, self.base_digest)
        raw = read_json(path)
        return Head(int(raw["seq"]), str(raw["hash"]), str(raw["child"]))

    def _recover(self) -> None:
        """Drop a cut-short line, entries past the head, and patch or private files no committed entry names."""
        ledger.repair(self.ledger)
        head = self.head()
        lines = self.ledger.read_text(encoding="utf-8").splitlines(keepends=True) if self.ledger.is_file() else []
        if len(lines) > head.seq + 1:
            self.ledger.write_text("".join(lines[: head.seq + 1]), encoding="utf-8")
        for folder in (self.patches, self.root / "private"):  # files a killed request wrote before its head
            for path in folder.glob("*.*") if folder.is_dir() else []:
                if not path.stem.isdigit() or int(path.stem) > head.seq:
                    path.unlink()

    def entries(self) -> list[dict[str, Any]]:
        """The committed entries, oldest first."""
        return ledger.read(self.ledger)[: self.head().seq + 1]

    def commit(self, model_before: str, edit: Edit, child: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Record one applied edit (from model digest `model_before` to `child`): patch, entry, then head."""
        if not self._held:
            raise RuntimeError("Store.commit needs the store's lock: use `with store.locked():`")
        head = self.head()
        if model_before != head.child:
            raise ValueError(f"the edit starts from model {model_before[:12]}, not the current version "
                             f"{head.child[:12]} (seq {head.seq}): apply requests to the current version")
        seq = head.seq + 1
        self.patches.mkdir(parents=True, exist_ok=True)
        patch = self.patches / f"{seq}.safetensors"
        digest = save_patch(patch, edit, model_before, child)
        entry = ledger.append(self.ledger, {**fields, "patch_digest": digest, "parent": model_before,
                                            "child": child})
        write_json(self.root / "HEAD.json", {"seq": entry["seq"], "hash": entry["hash"], "child": child})
        return entry

    def replay(self, base: nn.Module, upto: int | None = None) -> nn.Module:
        """The base model (changed in place) with committed patches 0..upto applied; ValueError on any mismatch."""
        if model_digest(base) != self.base_digest:
            raise ValueError("the base model's digest is not the store's base: wrong base model")
        for entry in self.entries()[: None if upto is None else upto + 1]:
            path = self.patches / f"{entry['seq']}.safetensors"
            if file_digest(path) != entry["patch_digest"]:
                raise ValueError(f"patch {path.name} does not match ledger seq {entry['seq']} (changed file)")
            edit, _ = load_patch(path)
            apply_patch(base, edit)
            if model_digest(base) != entry["child"]:
                raise ValueError(f"replaying seq {entry['seq']} does not give its recorded model digest")
        return base

    def verify(self, load_base: Callable[[], nn.Module]) -> list[str]:
        """Every problem found: the ledger's chain against the head, then a replay from the base to each version's
        digest. Empty when the store is whole."""
        problems = [str(p) for p in ledger.verify(self.ledger, head=self.head().hash)]
        if problems:
            return problems
        try:
            self.replay(load_base())
        except (ValueError, FileNotFoundError) as err:
            problems.append(str(err))
        return problems


def inverse(edit: Edit) -> Edit:
    """The edit that undoes `edit` (old and new swapped), bit for bit."""
    if isinstance(edit, WeightDelta):
        return WeightDelta(dict(edit.new), dict(edit.old))
    return NeuronPatch(tuple(LayerPatch(p.layer, p.neurons, p.new, p.old, p.new_bias, p.old_bias)
                             for p in edit.layers))


def rollback(store: Store, model: nn.Module, fields: dict[str, Any]) -> dict[str, Any]:
    """Undo the latest committed edit on `model` (the current version, changed in place) as a new entry."""
    entries = store.entries()
    if not entries:
        raise ValueError("nothing to roll back: the store holds the base model")
    last = entries[-1]
    edit, _ = load_patch(store.patches / f"{last['seq']}.safetensors")
    before = model_digest(model)
    apply_patch(model, edit, rollback=True)
    return store.commit(before, inverse(edit), model_digest(model),
                        {**fields, "method": "rollback", "params": {"undoes": last["seq"]}})

