"""The versioned store behind deletion requests: sequential requests replay bit for bit from the base, rollback is a
new entry that restores the parent exactly, a SIGKILL at any point leaves the previous version and no entry,
two requests submitted at once both land, one after the other."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib.core.adapter import FFNAdapter
from lib.core.editing import decay_with_noise, diff_edit, snapshot
from lib.deletion.patch import model_digest
from lib.deletion.store import Store, rollback
from tests.tiny_models import tiny_llama

ROOT = Path(__file__).resolve().parents[1]


def request(store: Store, name: str, seed: int) -> dict:
    """One request: replay the current version, decay two neurons, commit (the caller holds the lock)."""
    model = store.replay(tiny_llama(seed=0))
    before, start = snapshot(model), model_digest(model)
    gen = torch.Generator().manual_seed(seed)
    pairs = [(int(torch.randint(0, 2, (1,), generator=gen)), int(torch.randint(0, 37, (1,), generator=gen)))
             for _ in range(2)]
    decay_with_noise(FFNAdapter.for_model(model), sorted(set(pairs)), alpha=0.9, sigma=0.05, generator=gen)
    edit, _, _ = diff_edit(before, model, "neurons")
    return store.commit(start, edit, model_digest(model), {"request": name, "content_digest": f"{seed:064x}",
                                                          "method": "snku", "params": {"k": 2}, "time": "t"})


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", model_digest(tiny_llama(seed=0)))


def test_sequential_requests_replay_and_roll_back_bit_for_bit(store: Store) -> None:
    with store.locked():
        entries = [request(store, f"r{i}", seed=i) for i in range(3)]
        assert [e["seq"] for e in entries] == [0, 1, 2] and store.head().child == entries[-1]["child"]
        for i, entry in enumerate(entries):  # every version comes back from the base
            assert model_digest(store.replay(tiny_llama(seed=0), upto=i)) == entry["child"]
        current = store.replay(tiny_llama(seed=0))
        undo = rollback(store, current, {"request": "undo", "content_digest": "0" * 64, "time": "t"})
        assert undo["method"] == "rollback" and model_digest(current) == entries[1]["child"] == undo["child"]
        assert model_digest(store.replay(tiny_llama(seed=0))) == entries[1]["child"]
        with pytest.raises(ValueError, match="not the current version"):
            request_from_stale = store.replay(tiny_llama(seed=0), upto=0)
            store.commit(model_digest(request_from_stale), *_noop(request_from_stale))
    assert store.verify(lambda: tiny_llama(seed=0)) == []


def _noop(model: torch.nn.Module) -> tuple:
    """An empty edit and its fields (for the stale-parent check)."""
    edit, _, _ = diff_edit(snapshot(model), model, "neurons")
    return edit, model_digest(model), {"request": "x", "content_digest": "0" * 64, "method": "m", "params": {},
                                       "time": "t"}


def test_commit_needs_the_lock_and_verify_finds_a_changed_patch(store: Store) -> None:
    with pytest.raises(RuntimeError, match="needs the store's lock"):
        request(store, "r", seed=1)
    with store.locked():
        request(store, "r0", seed=1)
        request(store, "r1", seed=2)
    patch = store.patches / "0.safetensors"
    patch.write_bytes(patch.read_bytes()[:-8] + b"\0" * 8)
    problems = store.verify(lambda: tiny_llama(seed=0))
    assert len(problems) == 1 and "patch 0.safetensors does not match ledger seq 0" in problems[0]


CHILD = """
import sys, torch
torch.set_num_threads(1)
from tests.test_deletion_store import request, Store, model_digest, tiny_llama
store = Store(sys.argv[1], model_digest(tiny_llama(seed=0)))
print("ready", flush=True)
for i in range(int(sys.argv[2]), int(sys.argv[2]) + 1000):
    with store.locked():
        request(store, f"r{i}", seed=i)
    print(i, flush=True)
"""


def child(store: Store, first: int) -> subprocess.Popen:
    """A process committing requests first, first+1, ... to the store until killed."""
    return subprocess.Popen([sys.executable, "-c", CHILD, str(store.root), str(first)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_sigkill_at_any_point_leaves_the_previous_version_and_no_entry(store: Store) -> None:
    rng, kills = torch.Generator().manual_seed(0), 0
    for round_ in range(4):
        proc = child(store, first=1000 * round_)
        assert proc.stdout.readline().strip() == "ready"
        proc.stdout.readline()  # one request landed: the next ones are under way when the kill comes
        time.sleep(float(torch.rand(1, generator=rng)) * 0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
        with store.locked():  # recovery: whatever the kill left past the head is dropped
            entries = store.entries()
            assert len(entries) == store.head().seq + 1 == len(store.ledger.read_text().splitlines())
            assert sorted(int(p.stem) for p in store.patches.glob("*.safetensors")) == list(range(len(entries)))
        assert store.verify(lambda: tiny_llama(seed=0)) == []
    assert kills == 4 and len(store.entries()) >= 4


def test_two_requests_submitted_at_once_both_land_in_order(store: Store) -> None:
    script = ("import sys, torch\ntorch.set_num_threads(1)\n"
              "from tests.test_deletion_store import request, Store, model_digest, tiny_llama\n"
              "store = Store(sys.argv[1], model_digest(tiny_llama(seed=0)))\n"
              "with store.locked():\n    request(store, sys.argv[2], seed=int(sys.argv[3]))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store.root), f"req-{i}", str(i)], cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for i in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = store.entries()
    assert sorted(e["request"] for e in entries) == ["req-1", "req-2"] and entries[1]["parent"] == entries[0]["child"]
    assert store.verify(lambda: tiny_llama(seed=0)) == []
