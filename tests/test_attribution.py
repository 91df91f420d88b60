"""Tests for lib.core.attribution: activations at positions and Gradient x Activation."""

from __future__ import annotations

import pytest
import torch

from lib.core.adapter import FFNAdapter
from lib.core.attribution import ffn_activations, frozen_parameters, grad_x_act, grad_x_act_rows
from tests.tiny_models import ALL_TINY, D_FF, N_LAYERS


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three rows with right padding on one row and distinct scored positions / gold ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 101, (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "positions": torch.tensor([4, 6, 9]),
        "gold_ids": torch.tensor([17, 55, 90]),
    }


def _reference_row(model, adapter: FFNAdapter, batch: dict, row: int) -> torch.Tensor:
    """Direct per-row autograd: inject a leaf activation at one layer, backprop the logit."""
    ids = batch["input_ids"][row : row + 1]
    mask = batch["attention_mask"][row : row + 1]
    pos, gold = int(batch["positions"][row]), int(batch["gold_ids"][row])
    out = torch.zeros(N_LAYERS, D_FF)
    for layer in range(N_LAYERS):
        leaf: dict[str, torch.Tensor] = {}

        def inject(_layer: int, x: torch.Tensor) -> torch.Tensor:
            leaf["a"] = x.detach().clone().requires_grad_(True)
            return leaf["a"]

        with adapter.patch(inject, layers=[layer]):
            logit = model(input_ids=ids, attention_mask=mask).logits[0, pos, gold]
        logit.backward()
        out[layer] = (leaf["a"].grad * leaf["a"].detach())[0, pos]
    return out


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_matches_direct_autograd(name: str) -> None:
    model = ALL_TINY[name](seed=1)
    adapter = FFNAdapter.for_model(model)
    batch = _batch()
    rows = grad_x_act_rows(model, adapter, **batch)
    assert rows.shape == (3, N_LAYERS, D_FF) and rows.dtype == torch.float32
    for row in range(3):
        ref = _reference_row(model, adapter, batch, row)
        torch.testing.assert_close(rows[row], ref, atol=1e-5, rtol=0)
        # tiny-BERT scores are ~1e-4, so also compare relative to the row's largest score
        scale = ref.abs().max()
        torch.testing.assert_close(rows[row] / scale, ref / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_x_act(model, adapter, **batch), rows.sum(0))
    assert rows.abs().sum() > 0


@pytest.mark.parametrize("name", ["gpt_neo", "llama"])
def test_other_architectures_match_direct_autograd(name: str) -> None:
    model = ALL_TINY[name](seed=2)
    adapter = FFNAdapter.for_model(model)
    batch = _batch(seed=3)
    rows = grad_x_act_rows(model, adapter, **batch)
    ref = _reference_row(model, adapter, batch, 2)
    scale = ref.abs().max()
    torch.testing.assert_close(rows[2] / scale, ref / scale, atol=1e-5, rtol=0)


def test_requires_grad_flags_restored() -> None:
    model = ALL_TINY["bert"]()
    adapter = FFNAdapter.for_model(model)
    params = list(model.parameters())
    for i, param in enumerate(params):
        param.requires_grad_(i % 2 == 0)
    before = [p.requires_grad for p in params]
    grad_x_act(model, adapter, **_batch())
    assert [p.requires_grad for p in params] == before
    assert all(p.grad is None for p in params)  # only activations are differentiated
    with pytest.raises(RuntimeError):
        with frozen_parameters(model):
            assert not any(p.requires_grad for p in params)
            raise RuntimeError("restore even on error")
    assert [p.requires_grad for p in params] == before


def test_rows_are_independent_of_batch_mates() -> None:
    model = ALL_TINY["gpt2"]()
    adapter = FFNAdapter.for_model(model)
    batch = _batch()
    full = grad_x_act_rows(model, adapter, **batch)
    alone = grad_x_act_rows(model, adapter, **{k: v[:1] for k, v in batch.items()})
    torch.testing.assert_close(full[0], alone[0], atol=1e-6, rtol=1e-5)


def test_ffn_activations_match_capture() -> None:
    model = ALL_TINY["llama"]()
    adapter = FFNAdapter.for_model(model)
    batch = _batch()
    acts = ffn_activations(model, adapter, batch["input_ids"], batch["attention_mask"], batch["positions"])
    assert acts.shape == (3, N_LAYERS, D_FF) and not acts.requires_grad
    with torch.no_grad(), adapter.capture() as full:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for row, pos in enumerate(batch["positions"].tolist()):
        for layer in range(N_LAYERS):
            torch.testing.assert_close(acts[row, layer], full[layer][row, pos])


def test_positions_out_of_range() -> None:
    model = ALL_TINY["bert"]()
    adapter = FFNAdapter.for_model(model)
    batch = _batch()
    for bad in (torch.tensor([4, 6, 10]), torch.tensor([-1, 0, 0])):
        with pytest.raises(ValueError, match="out of range; allowed: 0..9"):
            grad_x_act(model, adapter, **{**batch, "positions": bad})
        with pytest.raises(ValueError, match="out of range"):
            ffn_activations(model, adapter, batch["input_ids"], batch["attention_mask"], bad)


def test_other_validation_errors() -> None:
    model = ALL_TINY["gpt2"]()
    adapter = FFNAdapter.for_model(model)
    batch = _batch()
    with pytest.raises(ValueError, match="padding"):
        grad_x_act(model, adapter, **{**batch, "positions": torch.tensor([4, 8, 9])})
    with pytest.raises(ValueError, match="positions shape"):
        grad_x_act(model, adapter, **{**batch, "positions": torch.tensor([4, 6])})
    with pytest.raises(ValueError, match="gold_ids .* out of range"):
        grad_x_act(model, adapter, **{**batch, "gold_ids": torch.tensor([1, 2, 101])})
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        grad_x_act(model, adapter, **batch)
    assert sum(len(adapter.down_proj(l)._forward_pre_hooks) for l in range(N_LAYERS)) == 0
