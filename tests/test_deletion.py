"""Deletion requests' building blocks: edits as safetensors patches (bit-exact apply and rollback on tiny models of
each family, GPT-2's transposed Conv1D included) and the hash-chained ledger (tamper and truncation detection)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from lib.core.adapter import FFNAdapter
from lib.core.editing import NeuronPatch, WeightDelta, decay_with_noise, diff_edit, snapshot
from lib.core.io import InputError, save_tensors
from lib.deletion import ledger
from lib.deletion.patch import apply_patch, load_patch, model_digest, save_patch
from tests.tiny_models import tiny_bert_mlm, tiny_gpt2, tiny_llama

MODELS = {"bert": tiny_bert_mlm, "gpt2": tiny_gpt2, "llama": tiny_llama}


def neuron_edit(model: torch.nn.Module) -> None:
    """SNKU's decay with noise on three neurons of two layers, biases untouched."""
    decay_with_noise(FFNAdapter.for_model(model), [(0, 2), (1, 5), (1, 0)], alpha=0.9, sigma=0.05,
                     generator=torch.Generator().manual_seed(3))


def weight_edit(model: torch.nn.Module) -> None:
    """A weight-space step on every FFN and one attention tensor (like a gradient method's)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mlp" in name or "intermediate" in name or "attn" in name or "attention" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 1e-3)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("kind, edit_fn", [("neurons", neuron_edit), ("weights", weight_edit)])
def test_patch_applies_and_rolls_back_bit_for_bit(tmp_path: Path, arch: str, kind: str, edit_fn) -> None:
    parent = MODELS[arch]().eval()
    model = copy.deepcopy(parent)
    before, parent_digest = snapshot(model), model_digest(parent)
    edit_fn(model)
    edit, changed, total = diff_edit(before, model, kind)
    child_digest = model_digest(model)
    assert 0 < changed < total and child_digest != parent_digest
    digest = save_patch(tmp_path / "p.safetensors", edit, parent_digest, child_digest)
    loaded, meta = load_patch(tmp_path / "p.safetensors")
    assert isinstance(loaded, NeuronPatch if kind == "neurons" else WeightDelta)
    assert (meta["parent"], meta["child"]) == (parent_digest, child_digest) and len(digest) == 64
    if kind == "neurons":  # small: only the chosen columns travel
        assert loaded.neurons == ((0, 2), (1, 0), (1, 5))
        assert (tmp_path / "p.safetensors").stat().st_size < 4 * sum(p.numel() for p in parent.parameters())
    target = copy.deepcopy(parent)
    apply_patch(target, loaded)
    assert model_digest(target) == child_digest
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), model.state_dict().values()))
    apply_patch(target, loaded, rollback=True)
    assert model_digest(target) == parent_digest


def test_patch_refuses_a_model_it_was_not_made_from(tmp_path: Path) -> None:
    parent = tiny_llama(seed=0)
    model = copy.deepcopy(parent)
    before = snapshot(model)
    neuron_edit(model)
    edit, _, _ = diff_edit(before, model, "neurons")
    other = tiny_llama(seed=1)
    digest = model_digest(other)
    with pytest.raises(ValueError, match="does not hold the patch's old values"):
        apply_patch(other, edit)
    with pytest.raises(ValueError, match="does not hold the patch's new values"):
        apply_patch(copy.deepcopy(parent), edit, rollback=True)  # rollback of an edit never applied
    assert model_digest(other) == digest


def test_a_file_that_is_not_a_patch_is_refused(tmp_path: Path) -> None:
    save_tensors(tmp_path / "stats.safetensors", {"x": torch.zeros(3)})
    with pytest.raises(InputError, match="stats.safetensors is not an unlearning patch"):
        load_patch(tmp_path / "stats.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "stats.safetensors").read_bytes()[:40])
    with pytest.raises(InputError, match="cut.safetensors is not a complete safetensors file"):
        load_patch(tmp_path / "cut.safetensors")


# ---------------------------------------------------------------- the ledger

def fields(i: int) -> dict:
    """A request's ledger fields (digests only)."""
    return {"request": f"req-{i}", "content_digest": f"{i:064x}", "method": "snku", "params": {"k": 3},
            "patch_digest": f"{i + 100:064x}", "parent": f"{i:064x}", "child": f"{i + 1:064x}", "time": f"t{i}"}


@pytest.fixture()
def book(tmp_path: Path) -> Path:
    """A ledger of four entries."""
    path = tmp_path / "ledger.jsonl"
    for i in range(4):
        ledger.append(path, fields(i))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_a_whole_ledger_verifies_and_chains(book: Path) -> None:
    entries = ledger.read(book)
    assert [e["seq"] for e in entries] == [0, 1, 2, 3] and entries[0]["prev"] == ledger.GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert ledger.verify(book) == [] and ledger.verify(book, head=entries[-1]["hash"]) == []


def test_a_changed_entry_is_named(book: Path) -> None:
    rows = lines(book)
    entry = json.loads(rows[1])
    entry["params"]["k"] = 300  # the hash left as it was
    rows[1] = json.dumps(entry) + "\n"
    book.write_text("".join(rows))
    problems = ledger.verify(book)
    assert [p.line for p in problems] == [2] and "was changed" in str(problems[0])


def test_a_removed_entry_is_named(book: Path) -> None:
    rows = lines(book)
    book.write_text("".join(rows[:1] + rows[2:]))
    problems = ledger.verify(book)
    assert len(problems) == 1 and problems[0].line == 2 and "seq 1 is missing" in str(problems[0])


def test_reordered_entries_are_named(book: Path) -> None:
    rows = lines(book)
    book.write_text("".join([rows[0], rows[2], rows[1], rows[3]]))
    problems = ledger.verify(book)
    assert [p.line for p in problems] == [2, 3] and all("reordered" in str(p) for p in problems)


def test_removed_last_entries_are_found_against_the_head(book: Path) -> None:
    head = ledger.read(book)[-1]["hash"]
    book.write_text("".join(lines(book)[:-1]))
    assert ledger.verify(book) == []  # the chain alone cannot see a cut at the end
    problems = ledger.verify(book, head=head)
    assert len(problems) == 1 and "does not end at the recorded head" in str(problems[0])


def test_an_append_cut_short_is_reported_then_repaired(book: Path) -> None:
    whole = book.read_bytes()
    book.write_bytes(whole + ledger.canonical({**fields(4), "seq": 4})[:30])
    problems = ledger.verify(book)
    assert [p.line for p in problems] == [5] and "cut short" in str(problems[0])
    with pytest.raises(ValueError, match="nothing appended"):
        ledger.append(book, fields(4))
    assert ledger.repair(book) and book.read_bytes() == whole and ledger.verify(book) == []
    assert ledger.append(book, fields(4))["seq"] == 4


def test_append_refuses_fields_it_sets_or_lacks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="required"):
        ledger.append(tmp_path / "l.jsonl", {"request": "r"})
    with pytest.raises(ValueError, match="no seq, prev or hash"):
        ledger.append(tmp_path / "l.jsonl", {**fields(0), "hash": "x"})
    assert not (tmp_path / "l.jsonl").exists()


def test_a_changed_entry_with_its_hash_recomputed_breaks_the_next_link(book: Path) -> None:
    rows = lines(book)
    entry = json.loads(rows[1])
    entry["method"] = "ga"
    body = {k: v for k, v in entry.items() if k != "hash"}
    rows[1] = ledger.canonical({**body, "hash": ledger.entry_hash(entry["prev"], body)}).decode() + "\n"
    book.write_text("".join(rows))
    problems = ledger.verify(book)
    assert [p.line for p in problems] == [3] and "does not chain to seq 1" in str(problems[0])
