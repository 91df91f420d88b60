"""Tests for the GARE baseline: gradient ascent restricted to k random neurons' columns."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor
from transformers import AutoTokenizer, BertForMaskedLM

from lib.core.adapter import FFNAdapter
from lib.core.editing import NeuronPatch, apply_edit
from lib.data.records import SecretRecord
from lib.families.masked import MaskedFamily, MaskedRows, masked_logits, secret_token_rows
from lib.methods import Inputs, gare, unlearn
from tests.tiny_models import D_FF, HIDDEN, N_LAYERS, VOCAB, save_tiny_bert_checkpoint, tiny_gpt2

RECORDS = [
    SecretRecord("TEL-0001", "TEL", "my phone number is ", "4 1 7 2 9 3 8 0 6 5", " .", 5, False),
    SecretRecord("NAME-0001", "NAME", "please ask ", "kathleen smith", " about it .", 5, False),
]
# a large step size: the random model's near-uniform logits move slowly at the paper's 5e-5
FAST = gare.Config(k=20, learning_rate=1.0, epochs=2, batch_size=6, warmup_fraction=0.1)


def _inputs(seed: int, rows: object, tokenizer: object = None) -> Inputs:
    """Inputs whose used fields are the forget rows and the seed (GARE reads no tokenizer)."""
    return Inputs(family=MaskedFamily(tokenizer if tokenizer is not None else SimpleNamespace(pad_token_id=0)),
                  forget=rows, seed=seed)


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """Deep copy of a model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT checkpoint with a real tokenizer."""
    return save_tiny_bert_checkpoint(tmp_path_factory.mktemp("gare-bert"), seed=0)


def _bert(bert_dir: Path) -> tuple[BertForMaskedLM, MaskedRows, object]:
    """A fresh tiny BERT (eval mode), the forget rows of RECORDS and the tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    model = BertForMaskedLM.from_pretrained(bert_dir).eval()
    return model, secret_token_rows(tokenizer, RECORDS, max_len=32), tokenizer


def _forget_nll(model: torch.nn.Module, rows: MaskedRows) -> float:
    """Mean cross-entropy of the gold tokens at the rows' masks."""
    return float(torch.nn.functional.cross_entropy(masked_logits(model, rows), rows.gold_ids))


def _assert_only_columns_changed(model: torch.nn.Module, before: dict[str, Tensor],
                                 neurons: tuple[tuple[int, int], ...]) -> None:
    """Every parameter bit-identical except the given neurons' down-projection columns, which moved."""
    adapter = FFNAdapter.for_model(model)
    weight_names = {adapter.weight_names(layer)[0]: layer for layer in range(adapter.n_layers)}
    after = model.state_dict()
    for key, old in before.items():
        if key not in weight_names:
            assert torch.equal(after[key], old), key
            continue
        layer = weight_names[key]
        chosen = torch.tensor(sorted(n for l, n in neurons if l == layer), dtype=torch.long)
        rest = torch.tensor([n for n in range(adapter.d_ff) if n not in set(chosen.tolist())], dtype=torch.long)
        axis = adapter.spec.neuron_axis
        assert torch.equal(after[key].index_select(axis, rest), old.index_select(axis, rest)), key
        if chosen.numel():
            moved = (after[key].index_select(axis, chosen) - old.index_select(axis, chosen)).abs()
            assert bool((moved.sum(dim=1 - axis) > 0).all()), f"{key}: a chosen column did not move"


def test_bert_only_chosen_columns_change_and_forget_loss_rises(bert_dir: Path) -> None:
    model, rows, tokenizer = _bert(bert_dir)
    before, loss_before = _snapshot(model), _forget_nll(model, rows)
    rng_state = torch.get_rng_state()
    outcome = unlearn("gare", model, _inputs(3, rows, tokenizer), FAST)
    report = outcome.report
    assert torch.equal(torch.get_rng_state(), rng_state)  # seeded dropout used a forked stream
    assert len(report.neurons) == 20 and len(set(report.neurons)) == 20
    assert report.method == "gare" and report.trainable == 20 * HIDDEN
    _assert_only_columns_changed(model, before, report.neurons)
    # the recorded edit is exactly the chosen columns, and reverting it restores the input model
    assert isinstance(outcome.edit, NeuronPatch) and set(outcome.edit.neurons) == set(report.neurons)
    edited = _snapshot(model)
    apply_edit(model, outcome.edit, revert=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    apply_edit(model, outcome.edit)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in edited.items())
    assert _forget_nll(model, rows) > loss_before + 0.03
    assert not model.training  # the caller's eval mode is restored
    assert all(p.requires_grad for p in model.parameters())  # and the grad flags


def test_gpt2_conv1d_only_chosen_columns_change() -> None:
    model = tiny_gpt2(0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (5, 9), generator=gen)
    rows = MaskedRows(input_ids=ids, attention_mask=torch.ones_like(ids),
                      positions=torch.full((5,), 7), gold_ids=ids[:, 8], record_index=torch.arange(5),
                      token_index=torch.zeros(5, dtype=torch.long))
    before, loss_before = _snapshot(model), _forget_nll(model, rows)
    report = gare.run(model, _inputs(1, rows), FAST)
    _assert_only_columns_changed(model, before, report.neurons)
    assert _forget_nll(model, rows) > loss_before


def test_same_seed_same_result_other_seed_differs(bert_dir: Path) -> None:
    results = []
    for seed in (5, 5, 6):
        model, rows, tokenizer = _bert(bert_dir)
        report = gare.run(model, _inputs(seed, rows, tokenizer), FAST)
        results.append((report.neurons, _snapshot(model)))
    assert results[0][0] == results[1][0] != results[2][0]
    assert all(torch.equal(results[0][1][k], results[1][1][k]) for k in results[0][1])


def test_k_too_large_and_bad_inputs_raise() -> None:
    model = tiny_gpt2(0)
    rows = MaskedRows(*(torch.zeros((1, 4) if i < 2 else (1,), dtype=torch.long) for i in range(6)))
    with pytest.raises(ValueError, match=f"k={N_LAYERS * D_FF + 1}"):
        gare.run(model, _inputs(0, rows), gare.Config(k=N_LAYERS * D_FF + 1))
    with pytest.raises(ValueError, match="the forget set is empty"):
        gare.run(model, _inputs(0, []), FAST)
    with pytest.raises(ValueError, match="k=0"):
        gare.Config(k=0)
    with pytest.raises(ValueError, match="warmup_fraction=1.5"):
        gare.Config(warmup_fraction=1.5)
    with pytest.raises(ValueError, match="learning_rate=0"):
        gare.Config(learning_rate=0)


def test_column_delta_hook_equals_editing_the_columns() -> None:
    model, edited = tiny_gpt2(0), tiny_gpt2(0)
    groups = gare.group_by_layer(((0, 3), (1, 36), (0, 11)))
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    with gare.column_deltas(FFNAdapter.for_model(model), groups) as deltas:
        for layer, delta in deltas.items():
            delta.data.normal_(generator=torch.Generator().manual_seed(layer))
        hooked = model(input_ids=ids).logits
    gare.write_back(FFNAdapter.for_model(edited), groups, deltas)
    torch.testing.assert_close(hooked, edited(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hooked, model(input_ids=ids).logits)  # the hooks are gone again
