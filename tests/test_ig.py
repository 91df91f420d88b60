"""Tests for lib.core.ig: Riemann formula, completeness, batched == loop, chunking, padding."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

import lib.core.ig
from lib.core.adapter import FFNAdapter
from lib.core.ig import IGConfig, alpha_grid, integrated_gradients, integrated_gradients_loop
from tests.tiny_models import ALL_TINY, tiny_bert_mlm

GRIDS = ("left_riemann", "linspace", "midpoint")
OBJECTIVES = ("prob", "logit", "loss")
FAMILIES = sorted(ALL_TINY)


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(seed: int = 0, n: int = 3, length: int = 9) -> SimpleNamespace:
    """Random right-padded rows (row 1 shorter) with positions inside each row."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 101, (n, length), generator=gen)  # (n, T)
    mask = torch.ones_like(ids)
    mask[1, length - 3:], ids[1, length - 3:] = 0, 0
    positions = torch.tensor([2, length - 4, length - 1][:n])
    gold = torch.randint(5, 101, (n,), generator=gen)
    return SimpleNamespace(input_ids=ids, attention_mask=mask, positions=positions, gold_ids=gold)


def _model(family: str, double: bool = True) -> nn.Module:
    """A tiny model of `family`, in float64 for tight tolerances."""
    model = ALL_TINY[family](seed=1)
    return model.double() if double else model


def _deep_model(family: str) -> nn.Module:
    """A 3-layer float64 variant of a tiny model, so one block is neither first, injected nor last."""
    config = ALL_TINY[family](seed=1).config
    config.num_hidden_layers = 3
    if family == "gpt_neo":
        config.attention_layers = ["global", "local", "global"]
    torch.manual_seed(1)
    return type(ALL_TINY[family]())(config).eval().double()


def _hook_state(model: nn.Module) -> dict[str, tuple[int, int, bool]]:
    """Per module: forward hooks, forward pre-hooks, and whether an instance `forward` is set."""
    return {name: (len(mod._forward_hooks), len(mod._forward_pre_hooks), "forward" in mod.__dict__)
            for name, mod in model.named_modules()}


def _objective_at(model: nn.Module, adapter: FFNAdapter, rows: SimpleNamespace, r: int, layer: int,
                  value: Tensor, objective: str) -> Tensor:
    """F(value): row r's objective with layer's activation at its position set to value (d_ff,)."""
    pos = int(rows.positions[r])

    def put(_layer: int, x: Tensor) -> Tensor:
        """Overwrite the one scored vector."""
        return x.index_put((torch.tensor([0]), torch.tensor([pos])), value[None].to(x.dtype))

    with adapter.patch(put, [layer]):
        logits = model(input_ids=rows.input_ids[r:r + 1], attention_mask=rows.attention_mask[r:r + 1]).logits
    scores = logits[0, pos]  # (V,)
    gold = int(rows.gold_ids[r])
    if objective == "logit":
        return scores[gold]
    prob = torch.softmax(scores, dim=-1)[gold]
    return prob if objective == "prob" else -torch.log(prob)


def _clean(model: nn.Module, adapter: FFNAdapter, rows: SimpleNamespace, r: int, layer: int) -> Tensor:
    """Row r's clean activation at its position in `layer` (d_ff,), computed alone."""
    with torch.no_grad(), adapter.capture([layer]) as store:
        model(input_ids=rows.input_ids[r:r + 1], attention_mask=rows.attention_mask[r:r + 1])
    return store[layer][0, int(rows.positions[r])]


@pytest.mark.parametrize("grid", GRIDS)
def test_exact_riemann_formula(grid: str) -> None:
    """IG(r, l) = a * (1/m) * sum_k dF/dx(alpha_k a), checked by one autograd call per step."""
    model = _model("bert")
    adapter, rows, steps = FFNAdapter.for_model(model), _rows(), 3
    got = integrated_gradients(model, adapter, rows, IGConfig(steps=steps, grid=grid, max_rows_per_batch=4))
    for r in range(2):
        for layer in range(adapter.n_layers):
            a = _clean(model, adapter, rows, r, layer)
            grads = []
            for alpha in alpha_grid(steps, grid).tolist():
                x = (alpha * a).requires_grad_(True)
                grads.append(torch.autograd.grad(_objective_at(model, adapter, rows, r, layer, x, "prob"), x)[0])
            expected = a * torch.stack(grads).sum(0) / steps
            torch.testing.assert_close(got[r, layer], expected, rtol=1e-9, atol=1e-12)


def test_alpha_grids() -> None:
    """The three grids give the documented alphas."""
    expected = {("left_riemann", 4): [0, 0.25, 0.5, 0.75], ("midpoint", 4): [0.125, 0.375, 0.625, 0.875],
                ("linspace", 3): [0, 0.5, 1.0]}
    for (grid, steps), alphas in expected.items():
        torch.testing.assert_close(alpha_grid(steps, grid), torch.tensor(alphas, dtype=torch.float64))


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("objective", ["logit", "prob"])
def test_completeness(family: str, objective: str) -> None:
    """With 200 midpoint steps, each (row, layer) sums to F(a) - F(0)."""
    model = _model(family)
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=2)
    cfg = IGConfig(steps=200, grid="midpoint", objective=objective, max_rows_per_batch=600)
    scores = integrated_gradients(model, adapter, rows, cfg)  # (R, L, d_ff)
    assert scores.shape == (3, adapter.n_layers, adapter.d_ff)
    with torch.no_grad():
        for r in range(3):
            for layer in range(adapter.n_layers):
                a = _clean(model, adapter, rows, r, layer)
                diff = (_objective_at(model, adapter, rows, r, layer, a, objective)
                        - _objective_at(model, adapter, rows, r, layer, torch.zeros_like(a), objective))
                assert abs(float(diff)) > 1e-9  # a non-trivial check
                assert float(scores[r, layer].sum()) == pytest.approx(float(diff), rel=1e-3, abs=1e-12)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_batched_equals_loop(grid: str, objective: str) -> None:
    """Batched and one-row-per-call IG agree within 1e-4 relative (float32)."""
    model = _model("bert", double=False)
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=3, n=2)
    cfg = IGConfig(steps=3, grid=grid, objective=objective, max_rows_per_batch=64)
    batched = integrated_gradients(model, adapter, rows, cfg)
    loop = integrated_gradients_loop(model, adapter, rows, cfg)
    assert float(loop.abs().max()) > 0
    assert float((batched - loop).abs().max() / loop.abs().max()) <= 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_independent_of_chunk_size(family: str) -> None:
    """max_rows_per_batch changes only memory, not results."""
    model = _model(family)
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=4)
    base = IGConfig(steps=4, objective="loss", max_rows_per_batch=1000)
    ref = integrated_gradients(model, adapter, rows, base)
    for chunk in (1, 5, 7):
        got = integrated_gradients(model, adapter, rows, replace(base, max_rows_per_batch=chunk))
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_padding_does_not_change_results(family: str) -> None:
    """Extra pad columns, and a row batched with longer rows, give the same IG as the row alone."""
    model = _model(family)
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=5)
    cfg = IGConfig(steps=3, max_rows_per_batch=9)
    ref = integrated_gradients(model, adapter, rows, cfg)
    padded = SimpleNamespace(**vars(rows))
    padded.input_ids = torch.cat([rows.input_ids, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    padded.attention_mask = torch.cat([rows.attention_mask, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(integrated_gradients(model, adapter, padded, cfg), ref, rtol=1e-9, atol=1e-12)
    alone = SimpleNamespace(input_ids=rows.input_ids[1:2, :6], attention_mask=rows.attention_mask[1:2, :6],
                            positions=rows.positions[1:2], gold_ids=rows.gold_ids[1:2])
    torch.testing.assert_close(integrated_gradients(model, adapter, alone, cfg)[0], ref[1], rtol=1e-9, atol=1e-12)


def test_layer_subset_and_state_restored() -> None:
    """Unselected layers stay zero; requires_grad flags and hooks are restored."""
    model = _model("bert")
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=6)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    full = integrated_gradients(model, adapter, rows, IGConfig(steps=2))
    part = integrated_gradients(model, adapter, rows, IGConfig(steps=2, layers=(1,)))
    assert [p.requires_grad for p in model.parameters()] == flags and not all(flags)
    assert all(not adapter.down_proj(layer)._forward_pre_hooks for layer in range(adapter.n_layers))
    assert float(part[:, 0].abs().max()) == 0.0 and float(full[:, 0].abs().max()) > 0
    torch.testing.assert_close(part[:, 1], full[:, 1], rtol=1e-9, atol=1e-12)


def test_validation_errors() -> None:
    """Bad configs, training mode and bad gold ids raise ValueError naming the value."""
    with pytest.raises(ValueError, match="grid='trapz'"):
        IGConfig(grid="trapz")
    with pytest.raises(ValueError, match="steps=1"):
        IGConfig(steps=1, grid="linspace")
    with pytest.raises(ValueError, match="max_rows_per_batch=0"):
        IGConfig(max_rows_per_batch=0)
    model = tiny_bert_mlm()
    adapter, rows = FFNAdapter.for_model(model), _rows()
    with pytest.raises(ValueError, match=r"layers \[5\] out of range"):
        integrated_gradients(model, adapter, rows, IGConfig(steps=2, layers=(5,)))
    bad = SimpleNamespace(**{**vars(rows), "gold_ids": rows.gold_ids[:2]})
    with pytest.raises(ValueError, match="gold_ids shape"):
        integrated_gradients(model, adapter, bad, IGConfig(steps=2))
    big = SimpleNamespace(**{**vars(rows), "gold_ids": torch.tensor([1, 2, 500])})
    with pytest.raises(ValueError, match=r"gold_ids \[500\] out of range; allowed: 0..100"):
        integrated_gradients(model, adapter, big, IGConfig(steps=2, max_rows_per_batch=100))
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        integrated_gradients(model, adapter, rows, IGConfig(steps=2))


@pytest.mark.parametrize("family", FAMILIES)
def test_shortcuts_equal_full_forward(family: str) -> None:
    """Replayed prefix and one-position FFNs give the full-forward loop's IG, with and without the paths."""
    model = _deep_model(family)
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=7)
    assert adapter.ffn_input(0) is not None and adapter.attention(0) is not None and adapter.attention_inputs(0)
    cfg = IGConfig(steps=3, grid="midpoint", objective="prob", max_rows_per_batch=5)
    loop = integrated_gradients_loop(model, adapter, rows, cfg)  # (3, 3, d_ff)
    assert float(loop[:, 1:].abs().min(dim=-1).values.max()) > 0  # the deeper layers matter too
    torch.testing.assert_close(integrated_gradients(model, adapter, rows, cfg), loop, rtol=1e-9, atol=1e-12)
    plain = FFNAdapter(model, replace(adapter.spec, ffn_in=None, attention=None, attn_in=(), attn_query=None,
                                      attn_out=None))  # blocks below the layer replayed, nothing else skipped
    torch.testing.assert_close(integrated_gradients(model, plain, rows, cfg), loop, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_model_untouched_after_call(family: str) -> None:
    """No hook or replaced forward outlives the call, and the model's logits are unchanged."""
    model = _deep_model(family)
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=8)
    state = _hook_state(model)
    with torch.no_grad():
        before = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
    integrated_gradients(model, adapter, rows, IGConfig(steps=2, max_rows_per_batch=4))
    with torch.no_grad():
        after = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
    assert _hook_state(model) == state
    assert torch.equal(before, after)


def test_state_restored_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error inside a chunk (replay, FFN hooks, injection active) still restores the model."""
    model = _deep_model("llama")
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=9)
    state, flags = _hook_state(model), [p.requires_grad for p in model.parameters()]
    calls = []

    def failing(logits: Tensor, gold: Tensor, objective: str) -> Tensor:
        """Fail in the first chunk of layer 2, after the clean pass."""
        calls.append(logits.shape[0])
        raise RuntimeError("boom")

    monkeypatch.setattr(lib.core.ig, "objective_values", failing)
    with pytest.raises(RuntimeError, match="boom"):
        integrated_gradients(model, adapter, rows, IGConfig(steps=2, layers=(2,)))
    assert calls and _hook_state(model) == state
    assert [p.requires_grad for p in model.parameters()] == flags


def test_existing_forward_override_kept() -> None:
    """A forward set on a block instance (as accelerate does) is used and put back after replay."""
    model = _deep_model("gpt2")
    adapter, rows = FFNAdapter.for_model(model), _rows(seed=10)
    block, calls = adapter.block(0), []
    original = block.forward

    def wrapper(*args: object, **kwargs: object) -> object:
        """Count calls, then compute as usual."""
        calls.append(1)
        return original(*args, **kwargs)

    block.forward = wrapper
    cfg = IGConfig(steps=2, objective="logit")
    got = integrated_gradients(model, adapter, rows, cfg)
    assert block.forward is wrapper and calls
    del block.forward
    torch.testing.assert_close(got, integrated_gradients(model, adapter, rows, cfg), rtol=0, atol=0)
