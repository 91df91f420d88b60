"""Batched Integrated Gradients on FFN neurons (DEPN's privacy-neuron detector).

For a row r (input, scored position p, gold token) and a layer l, let a be the clean
FFN activation (down-projection input) of layer l at position p, and F(x) the objective
when that one vector is replaced by x: upstream layers are unchanged, every other
position of layer l keeps its real activation, and everything downstream is recomputed.
With the zero baseline and a grid alpha_1..alpha_m, the attribution is the Riemann sum

    IG(r, l) = a * (1/m) * sum_k dF/dx (alpha_k * a)          (elementwise in a)

left_riemann: alpha_k = k/m, k = 0..m-1 (DEPN); linspace: alpha = linspace(0, 1, m),
both ends (knowledge-neurons, still weighted 1/m); midpoint: alpha_k = (k + 1/2)/m.
Completeness: sum_i IG(r, l)_i -> F(a) - F(0) as m grows (O(1/m^2) for midpoint).

Every (row, layer, step) is one batch row; rows are chunked by `max_rows_per_batch`
and each chunk costs one forward and one backward. Gradients are taken only w.r.t. the
injected (alpha * a) tensor; parameters are frozen. Objectives are computed at p only,
so the vocabulary projection runs on one position per row (see `_head_at`).
`positions` follows lib.attribution: masked LMs the [MASK], causal LMs the index before
the gold token. Rows must live on the model's device.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
from torch import Tensor, nn

from lib.adapter import FFNAdapter
from lib.attribution import _check_inputs, frozen_parameters

GRIDS = ("left_riemann", "linspace", "midpoint")
OBJECTIVES = ("prob", "logit", "loss")
BASELINES = ("zero",)


class RowsLike(Protocol):
    """What IG reads from a MaskedRows-like record."""

    input_ids: Tensor  # (R, T)
    attention_mask: Tensor  # (R, T)
    positions: Tensor  # (R,)
    gold_ids: Tensor  # (R,)


@dataclass(frozen=True)
class IGConfig:
    """IG hyper-parameters: steps m, alpha grid, objective, baseline, chunk size, layers."""

    steps: int = 20
    grid: str = "left_riemann"
    objective: str = "prob"
    baseline: str = "zero"
    max_rows_per_batch: int = 128
    layers: tuple[int, ...] | None = None  # None: every layer

    def __post_init__(self) -> None:
        """Reject values the engine cannot use."""
        if self.grid not in GRIDS or self.objective not in OBJECTIVES or self.baseline not in BASELINES:
            raise ValueError(f"grid={self.grid!r}, objective={self.objective!r}, baseline={self.baseline!r} "
                             f"invalid; allowed {GRIDS}, {OBJECTIVES}, {BASELINES}")
        if self.steps < (2 if self.grid == "linspace" else 1):
            raise ValueError(f"steps={self.steps} too small; allowed: >= 1 (>= 2 for linspace)")
        if self.max_rows_per_batch < 1:
            raise ValueError(f"max_rows_per_batch={self.max_rows_per_batch} must be >= 1")
        if self.layers is not None and not self.layers:
            raise ValueError("layers=() is empty; allowed: None (all layers) or a non-empty tuple")


def alpha_grid(steps: int, grid: str) -> Tensor:
    """The scaling factors alpha_k (m,) float64 of one grid."""
    k = torch.arange(steps, dtype=torch.float64)  # (m,)
    if grid == "left_riemann":
        return k / steps
    if grid == "midpoint":
        return (k + 0.5) / steps
    if grid == "linspace":
        return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    raise ValueError(f"grid={grid!r} invalid; allowed {GRIDS}")


def objective_values(logits: Tensor, gold: Tensor, objective: str) -> Tensor:
    """Per-row objective (B,) from logits (B, V) at the scored position."""
    if bool(((gold < 0) | (gold >= logits.shape[-1])).any()):
        raise ValueError(f"gold_ids {gold.tolist()} out of range; allowed: 0..{logits.shape[-1] - 1}")
    picked = gold[:, None]  # (B, 1)
    if objective == "logit":
        return logits.gather(1, picked)[:, 0]
    log_probs = torch.log_softmax(logits, dim=-1)  # (B, V)
    if objective == "prob":
        return log_probs.gather(1, picked)[:, 0].exp()
    if objective == "loss":
        return -log_probs.gather(1, picked)[:, 0]
    raise ValueError(f"objective={objective!r} invalid; allowed {OBJECTIVES}")


@contextmanager
def _head_at(model: nn.Module, positions: Tensor) -> Iterator[None]:
    """Feed the vocabulary projection only each row's scored position: logits (B, 1, V).

    The output embedding acts on each position separately, so slicing its input is exact
    and avoids a (B, T, V) projection that would cost more than the whole encoder.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    rows = torch.arange(positions.shape[0], device=positions.device)

    def pick(_mod: nn.Module, args: tuple) -> tuple:
        """Keep the scored position of every row."""
        return (args[0][rows, positions][:, None], *args[1:])  # (B, 1, H)

    handle = head.register_forward_pre_hook(pick)
    try:
        yield
    finally:
        handle.remove()


def _forward(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Plain forward returning logits; no KV cache is built."""
    kwargs = {"use_cache": False} if getattr(model.config, "use_cache", False) else {}
    return model(input_ids=ids, attention_mask=mask, **kwargs).logits


def _scored_logits(model: nn.Module, ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """Logits (B, V) at each row's scored position."""
    with _head_at(model, positions):
        logits = _forward(model, ids, mask)  # (B, 1 or T, V)
    rows = torch.arange(ids.shape[0], device=ids.device)
    return logits[:, 0] if logits.shape[1] == 1 else logits[rows, positions]


def _trim(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop trailing columns that are padding in every row (they cannot affect results)."""
    attended = mask.any(dim=0).nonzero()
    length = int(attended.max()) + 1 if attended.numel() else ids.shape[1]
    return ids[:, :length], mask[:, :length]


def clean_activations(model: nn.Module, adapter: FFNAdapter, rows: RowsLike,
                      max_rows: int = 128) -> Tensor:
    """No-grad FFN activations at each row's position, model dtype: (R, L, d_ff)."""
    parts = []
    for start in range(0, rows.input_ids.shape[0], max_rows):
        ids, mask = _trim(rows.input_ids[start:start + max_rows], rows.attention_mask[start:start + max_rows])
        idx = torch.arange(ids.shape[0], device=ids.device)
        pos = rows.positions[start:start + max_rows].to(ids.device)
        store: dict[int, Tensor] = {}

        def record(layer: int, x: Tensor) -> Tensor:
            """Keep only the scored position, so memory stays (B, d_ff) per layer."""
            store[layer] = x[idx, pos]  # (B, d_ff)
            return x

        with torch.no_grad(), adapter.patch(record):
            _forward(model, ids, mask)
        parts.append(torch.stack([store[layer] for layer in range(adapter.n_layers)], dim=1))
    return torch.cat(parts)  # (R, L, d_ff)


def _layers(adapter: FFNAdapter, layers: tuple[int, ...] | None) -> list[int]:
    """Validated sorted layer indices; None means every layer."""
    if layers is None:
        return list(range(adapter.n_layers))
    bad = [layer for layer in layers if not (isinstance(layer, int) and 0 <= layer < adapter.n_layers)]
    if bad:
        raise ValueError(f"layers {bad} out of range; allowed: 0..{adapter.n_layers - 1}")
    return sorted(set(layers))


def _chunk_grads(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, acts: Tensor,
                 combos: Tensor, alphas: Tensor, cfg: IGConfig) -> Tensor:
    """dF/dx at x = alpha*a for each (row, layer, step) combo (B, 3): grads (B, d_ff)."""
    r, layer_of, k = combos.unbind(1)  # each (B,)
    ids, mask = _trim(rows.input_ids[r], rows.attention_mask[r])  # (B, T')
    pos, gold = rows.positions[r], rows.gold_ids[r]  # (B,)
    injected = (alphas[k, None] * acts[r, layer_of]).requires_grad_(True)  # (B, d_ff) leaf

    def inject(layer: int, x: Tensor) -> Tensor:
        """Overwrite x (B, T, d_ff) at (row, pos) for the rows scaling this layer."""
        sel = (layer_of == layer).nonzero().flatten()  # (b,)
        return x.index_put((sel, pos[sel]), injected[sel].to(x.dtype)) if sel.numel() else x

    with torch.enable_grad(), adapter.patch(inject, layer_of.unique().tolist()):
        logits = _scored_logits(model, ids, mask, pos)  # (B, V)
        total = objective_values(logits, gold, cfg.objective).sum()
        # rows never mix, so d(sum)/d(injected[b]) is row b's own gradient
        (grad,) = torch.autograd.grad(total, injected)
    return grad  # (B, d_ff)


def _prepare(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, cfg: IGConfig,
             chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Validate inputs; return clean activations (R, L, d_ff), alphas (m,), combos (N, 3)."""
    _check_inputs(model, rows.input_ids, rows.attention_mask, rows.positions)
    if rows.gold_ids.shape != rows.positions.shape or rows.gold_ids.is_floating_point():
        raise ValueError(f"gold_ids shape {tuple(rows.gold_ids.shape)} invalid; "
                         f"expected integer {tuple(rows.positions.shape)}")
    vocab = getattr(model.config, "vocab_size", None)
    bad = (rows.gold_ids < 0) | (rows.gold_ids >= vocab) if vocab else torch.zeros(0, dtype=torch.bool)
    if bool(bad.any()):
        raise ValueError(f"gold_ids {rows.gold_ids[bad].tolist()} out of range; allowed: 0..{vocab - 1}")
    layers = _layers(adapter, cfg.layers)
    acts = clean_activations(model, adapter, rows, chunk)  # (R, L, d_ff)
    alphas = alpha_grid(cfg.steps, cfg.grid).to(device=acts.device, dtype=acts.dtype)  # (m,)
    combos = torch.cartesian_prod(  # (R * |layers| * m, 3): (row, layer, step)
        torch.arange(acts.shape[0]), torch.tensor(layers), torch.arange(cfg.steps)
    ).reshape(-1, 3).to(acts.device)
    return acts, alphas, combos


def _integrate(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, cfg: IGConfig,
               chunk: int) -> Tensor:
    """Shared engine: accumulate a * mean_k grad over chunks of `chunk` combos: (R, L, d_ff)."""
    acts, alphas, combos = _prepare(model, adapter, rows, cfg, chunk)
    n_rows, n_layers, d_ff = acts.shape
    dtype = torch.promote_types(acts.dtype, torch.float32)
    total = torch.zeros(n_rows * n_layers, d_ff, dtype=dtype, device=acts.device)  # (R*L, d_ff)
    with frozen_parameters(model):
        for start in range(0, combos.shape[0], chunk):
            part = combos[start:start + chunk]  # (B, 3)
            grads = _chunk_grads(model, adapter, rows, acts, part, alphas, cfg)  # (B, d_ff)
            total.index_add_(0, part[:, 0] * n_layers + part[:, 1], grads.to(dtype))
    return acts.to(dtype) * total.view(n_rows, n_layers, d_ff) / cfg.steps  # (R, L, d_ff)


def integrated_gradients(model: nn.Module, adapter: FFNAdapter, rows: RowsLike,
                         cfg: IGConfig = IGConfig()) -> Tensor:
    """IG of every FFN neuron per row (R, L, d_ff); layers outside cfg.layers stay 0."""
    return _integrate(model, adapter, rows, cfg, cfg.max_rows_per_batch)


def integrated_gradients_loop(model: nn.Module, adapter: FFNAdapter, rows: RowsLike,
                              cfg: IGConfig = IGConfig()) -> Tensor:
    """Reference: the same engine with one (row, layer, step) per forward/backward call."""
    return _integrate(model, adapter, rows, cfg, 1)
