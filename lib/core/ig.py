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

Batched engine (`integrated_gradients`): rows are sorted by length and split into groups
of about max_rows_per_batch / m rows; one no-grad forward records each group's clean
states. Then, per layer l, the group's (row, step) pairs go in chunks of at most
max_rows_per_batch, one forward and one backward each, and only what the injection can
change is computed:
- blocks below l, and the self-attention of block l (adapter `attention`), replay their
  recorded clean outputs: their inputs do not depend on x;
- in block l the FFN runs at p only: x replaces its activation there and every other
  position keeps its recorded clean down-projection output;
- in block l+1 the attention's input projections (Q, K, V; adapter `attention_inputs`)
  run at p only: the block's input differs from the clean one at p only;
- in the last block the query, attention-output projection and FFN run at p only: its
  other positions never reach the objective (everything after the last block acts on
  each position separately).
Each shortcut needs its adapter path; where a path is unknown that part runs in full.
Gradients are taken only w.r.t. the injected (alpha * a) tensor; parameters are frozen.
Objectives are computed at p only, so the LM head runs on one position per row (see
`_head_at`).

Reference (`integrated_gradients_loop`): the straightforward computation, one
(row, layer, step) per call, each a full forward and backward with the same padding,
frozen parameters, injection hook and objective.

`positions` follows lib.core.attribution: masked LMs the [MASK], causal LMs the index before
the gold token. Rows must live on the model's device.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter, LayerFn, TargetRows
from lib.core.attribution import _check_inputs, frozen_parameters
from lib.core.params import Count, Natural, check_ranges

GRIDS = ("left_riemann", "linspace", "midpoint")
OBJECTIVES = ("prob", "logit", "loss")
BASELINES = ("zero",)


class RowsLike(Protocol):
    """What IG reads from a MaskedRows-like record."""

    input_ids: Tensor  # (R, T)
    attention_mask: Tensor  # (R, T)
    positions: Tensor  # (R,)
    gold_ids: Tensor  # (R,)


def cap_targets(rows: TargetRows, max_targets: int | None) -> TargetRows:
    """At most `max_targets` evenly spaced rows (target tokens) per sample, in order; None keeps all."""
    if max_targets is None:
        return rows
    keep = []
    for sample in rows.sample.unique().tolist():
        index = (rows.sample == sample).nonzero().flatten()  # rows in target-token order
        if index.numel() > max_targets:
            index = index[torch.linspace(0, index.numel() - 1, max_targets).round().long()]
        keep.append(index)
    return rows.take(torch.cat(keep), rows.input_ids.device)


@dataclass(frozen=True)
class IGConfig:
    """IG hyper-parameters: steps m, alpha grid, objective, baseline, chunk size, layers."""

    steps: Count = 20
    grid: str = "left_riemann"
    objective: str = "prob"
    baseline: str = "zero"
    max_rows_per_batch: Count = 128
    layers: tuple[Natural, ...] | None = None  # None: every layer

    def __post_init__(self) -> None:
        """Reject values the engine cannot use."""
        check_ranges(self)
        if self.grid not in GRIDS or self.objective not in OBJECTIVES or self.baseline not in BASELINES:
            raise ValueError(f"grid={self.grid!r}, objective={self.objective!r}, baseline={self.baseline!r} "
                             f"invalid; allowed {GRIDS}, {OBJECTIVES}, {BASELINES}")
        if self.grid == "linspace" and self.steps < 2:  # a grid with both ends needs two points
            raise ValueError(f"steps={self.steps} too small; allowed: >= 1 (>= 2 for linspace)")
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


class _GoldLogProb(torch.autograd.Function):
    """log softmax(logits)[gold] (B,), with a backward that allocates no (B, V) tensor.

    Autograd's log_softmax + gather allocates and fills several more (B, V) tensors; this
    measured ~3x faster on CPU for B=80 rows of a 30k vocabulary.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, gold: Tensor) -> Tensor:
        """Log-probability of each row's gold token."""
        log_probs = torch.log_softmax(logits, dim=-1)  # (B, V)
        ctx.save_for_backward(log_probs, gold)
        return log_probs.gather(1, gold[:, None])[:, 0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        """d/dlogits = grad * (onehot(gold) - softmax(logits))."""
        log_probs, gold = ctx.saved_tensors
        # in place: the graph is used once; a second backward would fail the version check
        dlogits = log_probs.exp_().mul_(-grad[:, None])  # (B, V)
        return dlogits.scatter_add_(1, gold[:, None], grad[:, None]), None


def objective_values(logits: Tensor, gold: Tensor, objective: str) -> Tensor:
    """Per-row objective (B,) from logits (B, V) at the scored position."""
    if bool(((gold < 0) | (gold >= logits.shape[-1])).any()):
        raise ValueError(f"gold_ids {gold.tolist()} out of range; allowed: 0..{logits.shape[-1] - 1}")
    if objective == "logit":
        return logits.gather(1, gold[:, None])[:, 0]
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} invalid; allowed {OBJECTIVES}")
    log_prob = _GoldLogProb.apply(logits, gold)  # (B,)
    return log_prob.exp() if objective == "prob" else -log_prob


@contextmanager
def _head_at(model: nn.Module, positions: Tensor) -> Iterator[None]:
    """Feed the LM head only each row's scored position: logits (B, 1, V).

    Everything after the base model (final norm where it sits there, BERT's MLM transform,
    the vocabulary projection) acts on each position separately, so slicing the base
    model's last hidden state is exact and avoids a (B, T, V) projection that would cost
    more than the whole encoder.
    """
    base = getattr(model, "base_model", model)
    if base is model:  # no separate head to feed
        yield
        return
    rows = torch.arange(positions.shape[0], device=positions.device)

    def pick(_mod: nn.Module, _args: tuple, out: Any) -> Any:
        """Keep the scored position of every row in the last hidden state (B, 1, H)."""
        hidden = out[0][rows, positions][:, None]
        if isinstance(out, tuple):
            return (hidden, *out[1:])
        out[next(iter(out.keys()))] = hidden  # a ModelOutput: its first field
        return out

    handle = base.register_forward_hook(pick)
    try:
        yield
    finally:
        handle.remove()


def _run(model: nn.Module, ids: Tensor, mask: Tensor) -> Any:
    """Plain forward returning the model's output; no KV cache is built."""
    kwargs = {"use_cache": False} if getattr(model.config, "use_cache", False) else {}
    return model(input_ids=ids, attention_mask=mask, **kwargs)


def _forward(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Plain forward returning logits."""
    return _run(model, ids, mask).logits


def _scored_logits(model: nn.Module, ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """Logits (B, V) at each row's scored position."""
    with _head_at(model, positions):
        logits = _forward(model, ids, mask)  # (B, 1 or T, V)
    rows = torch.arange(ids.shape[0], device=ids.device)
    # squeeze, not [:, 0]: its backward is a view, not a zero-filled (B, 1, V) copy
    return logits.squeeze(1) if logits.shape[1] == 1 else logits[rows, positions]


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


def _validate(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, cfg: IGConfig) -> list[int]:
    """Check model mode, rows and gold ids; return the validated layers."""
    _check_inputs(model, rows.input_ids, rows.attention_mask, rows.positions)
    if rows.gold_ids.shape != rows.positions.shape or rows.gold_ids.is_floating_point():
        raise ValueError(f"gold_ids shape {tuple(rows.gold_ids.shape)} invalid; "
                         f"expected integer {tuple(rows.positions.shape)}")
    vocab = getattr(model.config, "vocab_size", None)
    bad = (rows.gold_ids < 0) | (rows.gold_ids >= vocab) if vocab else torch.zeros(0, dtype=torch.bool)
    if bool(bad.any()):
        raise ValueError(f"gold_ids {rows.gold_ids[bad].tolist()} out of range; allowed: 0..{vocab - 1}")
    return _layers(adapter, cfg.layers)


def _prepare(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, cfg: IGConfig,
             chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Validate inputs; return clean activations (R, L, d_ff), alphas (m,), combos (N, 3)."""
    layers = _validate(model, adapter, rows, cfg)
    acts = clean_activations(model, adapter, rows, chunk)  # (R, L, d_ff)
    alphas = alpha_grid(cfg.steps, cfg.grid).to(device=acts.device, dtype=acts.dtype)  # (m,)
    combos = torch.cartesian_prod(  # (R * |layers| * m, 3): (row, layer, step)
        torch.arange(acts.shape[0]), torch.tensor(layers), torch.arange(cfg.steps)
    ).reshape(-1, 3).to(acts.device)
    return acts, alphas, combos


def _integrate(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, cfg: IGConfig,
               chunk: int) -> Tensor:
    """Full-forward engine: accumulate a * mean_k grad over chunks of `chunk` combos: (R, L, d_ff)."""
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


@dataclass(frozen=True)
class _Group:
    """Clean states of a few rows, trimmed to the group's own attended columns."""

    index: Tensor  # (g,) the rows' indices in the full input
    ids: Tensor  # (g, T)
    mask: Tensor  # (g, T)
    positions: Tensor  # (g,)
    gold: Tensor  # (g,)
    acts: Tensor  # (g, L, d_ff) clean FFN activation at each row's position
    block_out: list[Any]  # per layer: the block's clean output as returned (tensor or tuple)
    attn_out: list[Any]  # per layer: the self-attention module's clean output as returned, or None
    down_out: list[Tensor]  # per layer: clean down-projection output (g, T, d_model)
    proj_out: list[list[Tensor]]  # per layer: clean outputs (g, T, *) of the attention's input projections


@contextmanager
def _hooks(pairs: list[tuple[nn.Module, Callable]], pre: bool = False) -> Iterator[None]:
    """Register forward (pre-)hooks while the context is open; remove them, also on errors."""
    handles = []
    try:
        for module, hook in pairs:
            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            handles.append(register(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _keeper(store: list[Any], layer: int) -> Callable:
    """Forward hook storing a module's output in store[layer]."""
    def keep(_mod: nn.Module, _args: tuple, out: Any) -> None:
        """Record without changing the output."""
        store[layer] = out
    return keep


def _record_group(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, index: Tensor) -> _Group:
    """One no-grad forward of rows[index] recording what the chunks of these rows reuse."""
    ids, mask = _trim(rows.input_ids[index], rows.attention_mask[index])  # (g, T)
    pos, n = rows.positions[index], adapter.n_layers
    block_out, attn_out, down_out, acts = [None] * n, [None] * n, [None] * n, [None] * n
    proj_out = [[None] * len(adapter.attention_inputs(layer)) for layer in range(n)]
    hooks = [(adapter.block(layer), _keeper(block_out, layer)) for layer in range(n)]
    hooks += [(adapter.down_proj(layer), _keeper(down_out, layer)) for layer in range(n)]
    hooks += [(adapter.attention(layer), _keeper(attn_out, layer))
              for layer in range(n) if adapter.attention(layer) is not None]
    hooks += [(proj, _keeper(proj_out[layer], j))
              for layer in range(n) for j, proj in enumerate(adapter.attention_inputs(layer))]
    sel = torch.arange(index.shape[0], device=ids.device)

    def act(layer: int, x: Tensor) -> Tensor:
        """Keep the scored activation (g, d_ff) of each row."""
        acts[layer] = x[sel, pos]
        return x

    with torch.no_grad(), _hooks(hooks), adapter.patch(act):
        _run(getattr(model, "base_model", model), ids, mask)  # the LM head is not needed
    return _Group(index, ids, mask, pos, rows.gold_ids[index], torch.stack(acts, dim=1), block_out, attn_out,
                  down_out, proj_out)


def _take(out: Any, index: Tensor) -> Any:
    """Rows `index` of a recorded block output (a tensor, or a tuple of tensors and None)."""
    if isinstance(out, Tensor):
        return out[index]
    if isinstance(out, tuple):
        return tuple(_take(item, index) for item in out)
    return out


def _constant(value: Any, *_args: Any, **_kwargs: Any) -> Any:
    """A forward that ignores its inputs."""
    return value


@contextmanager
def _replayed(modules: list[nn.Module], outputs: list[Any], index: Tensor) -> Iterator[None]:
    """Modules return their recorded clean outputs for rows `index` instead of computing them.

    An instance attribute `forward` shadows the class method (module hooks still run); one
    set by someone else (e.g. accelerate) is put back afterwards.
    """
    missing = object()
    saved = [module.__dict__.get("forward", missing) for module in modules]
    try:
        for module, out in zip(modules, outputs):
            module.forward = functools.partial(_constant, _take(out, index))
        yield
    finally:
        for module, old in zip(modules, saved):
            module.__dict__.pop("forward", None)
            if old is not missing:
                module.forward = old


@contextmanager
def _at_positions(entry: nn.Module, exit_: nn.Module, positions: Tensor, base: Tensor | None,
                  length: int) -> Iterator[None]:
    """Run a position-wise path (entry's input .. exit_'s output) at each row's position only.

    Every other position of exit_'s output takes `base` (B, length, d), or zeros if None.
    """
    rows = torch.arange(positions.shape[0], device=positions.device)

    def narrow(_mod: nn.Module, args: tuple) -> tuple:
        """The path's input at the scored positions: (B, 1, d_in)."""
        return (args[0][rows, positions][:, None], *args[1:])

    def widen(_mod: nn.Module, _args: tuple, out: Tensor) -> Tensor:
        """Back to (B, length, d): base everywhere, the computed output at each position."""
        if base is None:  # a fresh tensor: fill it in place
            return out.new_zeros(out.shape[0], length, out.shape[-1]).index_put_((rows, positions), out[:, 0])
        return base.to(out.dtype).index_put((rows, positions), out[:, 0])

    with _hooks([(entry, narrow)], pre=True), _hooks([(exit_, widen)]):
        yield


def _injector(injected: Tensor, positions: Tensor) -> LayerFn:
    """Hook putting injected (B, d_ff) at each row's position of x (B, T or 1, d_ff)."""
    rows = torch.arange(positions.shape[0], device=positions.device)

    def inject(_layer: int, x: Tensor) -> Tensor:
        """Overwrite the scored activation; a one-column x is the FFN run at the position only."""
        if x.shape[1] == 1:
            return injected[:, None].to(x.dtype)
        return x.index_put((rows, positions), injected.to(x.dtype))

    return inject


def _skip_unchanged(stack: ExitStack, adapter: FFNAdapter, group: _Group, layer: int, local: Tensor) -> None:
    """Enter the contexts that skip work x cannot change (see the module docstring)."""
    pos, length = group.positions[local], group.ids.shape[1]
    modules, outputs = [adapter.block(i) for i in range(layer)], group.block_out[:layer]
    if adapter.attention(layer) is not None:  # layer's input is clean, so is its attention
        modules, outputs = modules + [adapter.attention(layer)], outputs + [group.attn_out[layer]]
    stack.enter_context(_replayed(modules, outputs, local))
    if adapter.ffn_input(layer) is not None:
        ffn = (adapter.ffn_input(layer), adapter.down_proj(layer))
        stack.enter_context(_at_positions(*ffn, pos, group.down_out[layer][local], length))
    if layer + 1 == adapter.n_layers:
        return
    for proj, clean in zip(adapter.attention_inputs(layer + 1), group.proj_out[layer + 1]):
        # block layer+1's input differs from the clean one at p only
        stack.enter_context(_at_positions(proj, proj, pos, clean[local], length))
    for entry, exit_ in _last_block_paths(adapter, layer):
        stack.enter_context(_at_positions(entry, exit_, pos, None, length))


def _last_block_paths(adapter: FFNAdapter, layer: int) -> list[tuple[nn.Module, nn.Module]]:
    """Position-wise paths of the last block whose other positions never reach the objective."""
    last = adapter.n_layers - 1
    paths = [(adapter.ffn_input(last), adapter.down_proj(last)), (adapter.attention_output(last),) * 2]
    if layer + 1 < last:  # at layer + 1 == last the query already runs at p (clean elsewhere)
        paths.append((adapter.attention_query(last),) * 2)
    return [(entry, exit_) for entry, exit_ in paths if entry is not None]


def _group_chunk_grads(model: nn.Module, adapter: FFNAdapter, group: _Group, layer: int, local: Tensor,
                       alphas: Tensor, cfg: IGConfig) -> Tensor:
    """dF/dx at x = alpha*a for group rows `local` (B,) at `layer`, alphas (B,): grads (B, d_ff)."""
    pos = group.positions[local]
    injected = (alphas[:, None] * group.acts[local, layer]).requires_grad_(True)  # (B, d_ff) leaf
    with ExitStack() as stack:
        _skip_unchanged(stack, adapter, group, layer, local)
        stack.enter_context(adapter.patch(_injector(injected, pos), [layer]))
        stack.enter_context(torch.enable_grad())
        logits = _scored_logits(model, group.ids[local], group.mask[local], pos)  # (B, V)
        total = objective_values(logits, group.gold[local], cfg.objective).sum()
        # rows never mix, so d(sum)/d(injected[b]) is row b's own gradient
        (grad,) = torch.autograd.grad(total, injected)
    return grad  # (B, d_ff)


def _group_ig(model: nn.Module, adapter: FFNAdapter, group: _Group, layers: list[int], cfg: IGConfig) -> Tensor:
    """IG of one group (g, L, d_ff): per layer, its (row, step) pairs in chunks."""
    n_rows, n_layers, d_ff = group.acts.shape
    dtype = torch.promote_types(group.acts.dtype, torch.float32)
    alphas = alpha_grid(cfg.steps, cfg.grid).to(device=group.acts.device, dtype=group.acts.dtype)  # (m,)
    pairs = torch.cartesian_prod(torch.arange(n_rows), torch.arange(cfg.steps))  # (g*m, 2): (row, step)
    pairs = pairs.reshape(-1, 2).to(group.acts.device)
    total = torch.zeros(n_rows, n_layers, d_ff, dtype=dtype, device=group.acts.device)
    for layer in layers:
        for start in range(0, pairs.shape[0], cfg.max_rows_per_batch):
            local, k = pairs[start:start + cfg.max_rows_per_batch].unbind(1)  # each (B,)
            grads = _group_chunk_grads(model, adapter, group, layer, local, alphas[k], cfg)
            total[:, layer].index_add_(0, local, grads.to(dtype))
    return group.acts.to(dtype) * total / cfg.steps


def _row_groups(mask: Tensor, steps: int, chunk: int) -> list[Tensor]:
    """Row indices sorted by length (less padding), in near-equal groups of <= max(1, chunk // m)."""
    order = mask.sum(dim=1).argsort(stable=True)  # (R,)
    size = max(1, chunk // steps)
    return list(order.tensor_split(-(-order.numel() // size)))


def _integrate_shared(model: nn.Module, adapter: FFNAdapter, rows: RowsLike, cfg: IGConfig) -> Tensor:
    """Batched engine: record clean states per row group, then IG of each group: (R, L, d_ff)."""
    layers = _validate(model, adapter, rows, cfg)
    result = None
    with frozen_parameters(model):
        for index in _row_groups(rows.attention_mask, cfg.steps, cfg.max_rows_per_batch):
            group = _record_group(model, adapter, rows, index)
            scores = _group_ig(model, adapter, group, layers, cfg)  # (g, L, d_ff)
            if result is None:
                result = scores.new_zeros(rows.input_ids.shape[0], *scores.shape[1:])
            result[index] = scores
    return result  # (R, L, d_ff)


def integrated_gradients(model: nn.Module, adapter: FFNAdapter, rows: RowsLike,
                         cfg: IGConfig = IGConfig()) -> Tensor:
    """IG of every FFN neuron per row (R, L, d_ff); layers outside cfg.layers stay 0."""
    return _integrate_shared(model, adapter, rows, cfg)


def integrated_gradients_loop(model: nn.Module, adapter: FFNAdapter, rows: RowsLike,
                              cfg: IGConfig = IGConfig()) -> Tensor:
    """Reference: one (row, layer, step) per full forward/backward call, no work skipped."""
    return _integrate(model, adapter, rows, cfg, 1)
