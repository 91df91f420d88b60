"""Edits of a model: in-place writes to FFN neurons' output weights, and the record of what an edit changed.

A neuron's output-weight vector is its column of the FFN down-projection (length d_model);
the adapter hides the per-architecture layout (e.g. GPT-2's transposed Conv1D weight).
SNKU's decay with noise (Sec. 3.4, Eqs. 10-12) and zeroing write such columns. Whatever a method
does, `diff_edit` records it as a NeuronPatch (old and new columns and biases of the neurons that
changed; it refuses a neuron-level edit that touched anything else) or a WeightDelta (old and new
values of every changed tensor), and `apply_edit` replays or reverts it bit for bit.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.core.params import Count, NonNegative, PositiveFraction, check_ranges

DECAY_MODES = ("one_minus_pow", "pow")


@dataclass(frozen=True)
class DecayEdit:
    """The decay-with-noise edit of K neurons (SNKU Eqs. 10-12), shared by SNKU and the random-neuron control."""

    k: Count = 300  # neurons edited
    decay_mode: str = "one_minus_pow"  # delta_r = 1 - alpha^r (r = 1-based rank); "pow": alpha^r
    alpha: PositiveFraction = 0.99
    sigma: NonNegative = 0.05  # absolute noise standard deviation

    def __post_init__(self) -> None:
        """Reject values the edit cannot use; the ranges of a subclass's fields are checked here too."""
        check_ranges(self)
        if self.decay_mode not in DECAY_MODES:
            raise ValueError(f"decay_mode={self.decay_mode!r} invalid; allowed {DECAY_MODES}")


@dataclass(frozen=True)
class EditStats:
    """Size of one edit: neurons touched, weights overwritten, share of all model parameters."""

    n_neurons: int
    n_weights_edited: int
    fraction_weights_edited: float


def decay_factors(k: int, alpha: float, mode: str = "one_minus_pow") -> Tensor:
    """Decay factor per 1-based rank r: 1 - alpha**r ("one_minus_pow", Eq. 10) or alpha**r."""
    if mode not in DECAY_MODES:
        raise ValueError(f"mode={mode!r} is not supported; use one of {DECAY_MODES}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in (0, 1]")
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    ranks = torch.arange(1, k + 1, dtype=torch.float64)  # (k,)
    powers = torch.tensor(alpha, dtype=torch.float64) ** ranks  # (k,)
    return 1.0 - powers if mode == "one_minus_pow" else powers


def _check_neurons(adapter: FFNAdapter,
                   neurons: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validate (layer, neuron) pairs: in range and without duplicates."""
    pairs = [(int(layer), int(neuron)) for layer, neuron in neurons]
    bad = [p for p in pairs if not (0 <= p[0] < adapter.n_layers and 0 <= p[1] < adapter.d_ff)]
    if bad:
        raise ValueError(f"neurons {bad[:5]} out of range; allowed layer "
                         f"0..{adapter.n_layers - 1}, neuron 0..{adapter.d_ff - 1}")
    if len(set(pairs)) != len(pairs):
        n_dup = len(pairs) - len(set(pairs))
        raise ValueError(f"neurons contains {n_dup} duplicate (layer, neuron) pairs; each once")
    return pairs


def _by_layer(pairs: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """Map layer -> list of rank positions (0-based) of its neurons in `pairs`."""
    ranks: dict[int, list[int]] = defaultdict(list)
    for rank, (layer, _) in enumerate(pairs):
        ranks[layer].append(rank)
    return ranks


def _stats(adapter: FFNAdapter, n_neurons: int) -> EditStats:
    """EditStats for `n_neurons` full output-weight vectors."""
    total = sum(p.numel() for p in adapter.model.parameters())
    n_weights = n_neurons * adapter.d_model
    return EditStats(n_neurons=n_neurons, n_weights_edited=n_weights,
                     fraction_weights_edited=n_weights / total if total else 0.0)


def edit_noise(n: int, d_model: int, sigma: float, generator: torch.Generator) -> Tensor:
    """Noise rows (n, d_model) ~ N(0, sigma^2 I), row r for rank r, drawn on CPU in float32."""
    noise = torch.randn((n, d_model), generator=generator, dtype=torch.float32)  # (n, d_model)
    return noise * sigma


def decay_with_noise(adapter: FFNAdapter, neurons: Sequence[tuple[int, int]], alpha: float,
                     sigma: float, generator: torch.Generator,
                     mode: str = "one_minus_pow") -> EditStats:
    """In place: w_new = delta_r * w_old + eps_r for the neuron of rank r (Eqs. 10-12)."""
    if not sigma >= 0.0:
        raise ValueError(f"sigma={sigma} must be >= 0 (absolute noise std)")
    pairs = _check_neurons(adapter, neurons)
    delta = decay_factors(len(pairs), alpha, mode).to(torch.float32)  # (K,)
    # One CPU draw in rank order makes the edit identical on every device for a given seed.
    eps = edit_noise(len(pairs), adapter.d_model, sigma, generator)  # (K, d_model)
    with torch.no_grad():
        for layer, ranks in _by_layer(pairs).items():
            idx = torch.tensor([pairs[r][1] for r in ranks], dtype=torch.long)  # (k_l,)
            rows = torch.tensor(ranks, dtype=torch.long)  # (k_l,)
            old = adapter.get_columns(layer, idx)  # (k_l, d_model)
            # bf16/fp16 weights are edited in fp32 and rounded once, on write-back.
            dtype = torch.promote_types(old.dtype, torch.float32)
            scale = delta[rows, None].to(old.device, dtype)  # (k_l, 1)
            new = scale * old.to(dtype) + eps[rows].to(old.device, dtype)  # (k_l, d_model)
            adapter.set_columns(layer, idx, new)
    return _stats(adapter, len(pairs))


def zero_neurons(adapter: FFNAdapter, neurons: Sequence[tuple[int, int]]) -> EditStats:
    """In place: set the output-weight vectors of the given neurons to zero."""
    pairs = _check_neurons(adapter, neurons)
    with torch.no_grad():
        for layer, ranks in _by_layer(pairs).items():
            idx = torch.tensor([pairs[r][1] for r in ranks], dtype=torch.long)  # (k_l,)
            adapter.set_columns(layer, idx, torch.zeros(len(ranks), adapter.d_model))
    return _stats(adapter, len(pairs))


# ---------------------------------------------------------------- edits: what a method changed, bit for bit

KINDS = ("neurons", "weights")


@dataclass(frozen=True)
class LayerPatch:
    """Old and new output-weight vectors (and down-projection bias) of chosen neurons of one layer."""

    layer: int
    neurons: Tensor  # (k,) long, ascending
    old: Tensor  # (k, d_model)
    new: Tensor  # (k, d_model)
    old_bias: Tensor | None = None  # (d_model,), only when the bias changed
    new_bias: Tensor | None = None


@dataclass(frozen=True)
class NeuronPatch:
    """A neuron-level edit: per layer, the changed FFN neurons' columns (and bias); nothing else changes."""

    layers: tuple[LayerPatch, ...]
    # the FFNs took the biases their architecture's config flag allows (lib.core.adapter.FFNAdapter.add_ffn_biases):
    # the input model had none, so its old biases are zeros, and a revert removes them again
    biases_added: bool = False

    @property
    def neurons(self) -> tuple[tuple[int, int], ...]:
        """(layer, neuron) pairs whose output weights the patch changes."""
        return tuple((p.layer, int(n)) for p in self.layers for n in p.neurons)


@dataclass(frozen=True)
class WeightDelta:
    """A weight-space edit: old and new values of every parameter tensor that changed."""

    old: dict[str, Tensor]
    new: dict[str, Tensor]


Edit = NeuronPatch | WeightDelta


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every parameter by name (tied weights once): the state an edit is measured from."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _differs(old: Tensor, new: Tensor) -> Tensor:
    """Elementwise 'changed' mask; a NaN left in place is no change."""
    same = old == new
    if old.is_floating_point():
        same |= old.isnan() & new.isnan()
    return ~same


def _layer_patch(adapter: FFNAdapter, layer: int, before: dict[str, Tensor], after: dict[str, Tensor]) -> LayerPatch | None:
    """The patch of one layer's down-projection (None when it did not change)."""
    names = adapter.weight_names(layer)
    weight, bias = names[0], names[1] if len(names) > 1 else None
    axis = adapter.spec.neuron_axis
    columns = _differs(before[weight], after[weight]).any(dim=1 - axis).nonzero().flatten()  # (k,)
    bias_changed = bias is not None and bool(_differs(before[bias], after[bias]).any())
    if not columns.numel() and not bias_changed:
        return None
    pick = lambda w: (w.index_select(axis, columns).T if axis == 1 else w.index_select(axis, columns)).clone()  # noqa: E731
    return LayerPatch(layer, columns.cpu(), pick(before[weight]), pick(after[weight]),
                      before[bias].clone() if bias_changed else None, after[bias].clone() if bias_changed else None)


def diff_edit(before: dict[str, Tensor], model: nn.Module, kind: str) -> tuple[Edit, int, int]:
    """The edit that turns `before` into `model`'s parameters, with (changed scalars, total scalars).

    kind "neurons": every change must lie in FFN down-projection columns and biases, else ValueError: the
    patch holds exactly the changed columns, so it proves a neuron method left everything else bit-identical.
    """
    if kind not in KINDS:
        raise ValueError(f"edit kind {kind!r} unknown; allowed: {', '.join(KINDS)}")
    after = {name: p.detach() for name, p in model.named_parameters()}
    adapter = FFNAdapter.for_model(model) if kind == "neurons" else None
    added = [name for name in after if name not in before]
    if added:  # a neuron method gave the FFNs biases (absent = zero): those, and nothing else, may be new
        allowed_new = set(adapter.bias_names()) if adapter is not None else set()
        if not set(added) <= allowed_new:
            raise ValueError(f"an edit added parameters {sorted(set(added) - allowed_new)[:3]}; allowed: the FFN "
                             "biases its architecture's config flag gives, by a neuron-level edit")
        before = {**before, **{name: torch.zeros_like(after[name]) for name in added}}
    masks = {name: _differs(before[name], after[name]) for name in before}
    changed, total = sum(int(m.sum()) for m in masks.values()), sum(t.numel() for t in before.values())
    moved = [name for name, m in masks.items() if bool(m.any())]
    if kind == "weights":
        return WeightDelta({n: before[n] for n in moved}, {n: after[n].clone() for n in moved}), changed, total
    allowed = {name for layer in range(adapter.n_layers) for name in adapter.weight_names(layer)}
    stray = [name for name in moved if name not in allowed]
    if stray:
        raise ValueError(f"a neuron-level edit changed {stray[:3]}; allowed: FFN down-projection columns and biases")
    patches = (_layer_patch(adapter, layer, before, after) for layer in range(adapter.n_layers))
    return NeuronPatch(tuple(p for p in patches if p is not None), biases_added=bool(added)), changed, total


def apply_edit(model: nn.Module, edit: Edit, revert: bool = False) -> None:
    """In place: write the edit's new values into `model` (its old values with revert=True), bit for bit."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        if isinstance(edit, WeightDelta):
            for name, value in (edit.old if revert else edit.new).items():
                params[name].copy_(value)
            return
        adapter = FFNAdapter.for_model(model)
        if edit.biases_added and not revert:
            adapter.add_ffn_biases()
        for patch in edit.layers:
            adapter.set_columns(patch.layer, patch.neurons, patch.old if revert else patch.new)
            bias = patch.old_bias if revert else patch.new_bias
            if bias is not None:
                adapter.down_proj_bias(patch.layer).copy_(bias)
        if edit.biases_added and revert:
            adapter.remove_ffn_biases()
