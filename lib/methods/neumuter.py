"""NeuMuter (paper 001, section 3, Algorithm 1): learn hard-concrete FFN neuron masks, keep the muted ones.

Localization (section 3.1): the model is frozen; only log α of a HardConcreteMask (lib.methods.hard_concrete)
on every FFN neuron of `layers` trains, with Adam, minimising Eq. 13 per step:
  w · NLL_f + λ · KL(original ‖ masked on the neighbours) + η · R(M)
Both families (lib.methods.Family): a causal LM's scored tokens are every next token of a sequence, a masked
LM's the secret token at each row's [MASK]; the neighbours are the family's (causal: MLM-rewritten forget
texts; masked: the same records with the secret swapped for a same-length placeholder, APNEAP's counterparts).
- NLL_f: forget NLL summed over scored tokens, divided by the number of forget samples in the batch. w = −1
  (forget_loss="ascent", the paper's −L_f) or, as the public code, −1 while the batch's mean per-token
  NLL <= `ceiling` and +5 above it ("ceiling"; holds the NLL near the ceiling instead of letting it grow).
- KL: token-level KL(P_original ‖ P_masked) summed over scored tokens as Eq. 9, divided by the number of
  neighbour samples in the batch (so with K neighbours per sample it weighs 1/K of Eq. 13's dataset sum).
- R: Eq. 12 as written (it penalises closing gates; see lib.methods.hard_concrete). A gate clamped at 0
  gets no data gradient, only R's, and Adam's normalised step then reopens it at the full learning rate
  whatever η > 0 is: on tiny models (few neurons, large R gradient each) this stalls unlearning.
`passes` is the paper's E counted in passes over the forget set: one pass = every forget batch once; one
step = one batch of `batch_size` forget samples plus their K neighbours each (a forward each, under one
gate draw). The original model's log-probs at the neighbours' scored tokens are computed once before training
(no second model copy), so memory grows as N·K·T·V: for a 50k vocabulary that can exceed a model copy. Gates
are sampled once per step (deterministic if not sample_gates); log α and the log-softmax are kept in at least
float32.

Selection (end of 3.1): "energy" (paper) sorts the deterministic mask values ascending and accumulates |m|
while the sum stays <= energy_fraction of the total; the last value reached is ε and neurons with m <= ε
are selected, except those with m = 1 (Eq. 14 leaves them unchanged; counting them would make the neuron
count meaningless when ε reaches 1). "gate_threshold" (public code): σ(log α) < gate_threshold, which is
the same as m < 1.2 · gate_threshold − 0.1.
Removal (3.2, Eq. 14): selected neurons keep their mask value as a scale, all others 1. Every
`check_every` passes (and after the last) that scaling is applied through hooks and the stop criterion
tested; at the end it is written into the down-proj columns so the saved model stands alone.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lib.core.adapter import FFNAdapter
from lib.core.attribution import frozen_parameters
from lib.families.causal import batches
from lib.core.params import Count, Natural, NonNegative, OpenFraction, Positive, PositiveFraction, check_ranges
from lib.methods import Family, Inputs, Report
from lib.methods.hard_concrete import GAMMA, WIDTH, HardConcreteMask, gated
from lib.methods.training import forgotten

label = "NeuMuter"  # the name every report prints
families = ("masked", "causal")  # the KL is over the family's scored tokens: next tokens, or [MASK]s
needs = ("forget", "neighbours")
kind = "neurons"
FORGET_LOSSES = ("ascent", "ceiling")
SELECTIONS = ("energy", "gate_threshold")
WEIGHT_BELOW_CEILING = -1.0  # public code: ascend while the forget NLL is at most the ceiling
WEIGHT_ABOVE_CEILING = 5.0  # ... and descend above it

Check = Callable[[HardConcreteMask, dict[str, Any]], bool]


@dataclass(frozen=True)
class Config:
    """NeuMuter hyper-parameters; defaults are the paper's (B.4) where it states them."""

    lambda_kl: NonNegative = 500.0
    eta_l0: NonNegative = 5.0
    beta: Positive = 0.3
    init_log_alpha: float = math.log(11.0)  # a log-odds: any sign (negative starts the gates mostly closed)
    learning_rate: Positive = 0.1
    passes: Count = 100  # E: passes over the forget set
    forget_loss: str = "ascent"
    ceiling: Positive = 8.0
    selection: str = "energy"
    energy_fraction: PositiveFraction = 0.05
    gate_threshold: OpenFraction = 0.15
    check_every: Count = 5  # passes between stop checks
    layers: tuple[Natural, ...] | None = None  # None: every layer (the public code skips layer 0)
    batch_size: Count = 8  # forget samples per step
    sample_gates: bool = True

    def __post_init__(self) -> None:
        """Reject values the algorithm cannot use."""
        check_ranges(self)
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"forget_loss={self.forget_loss!r} invalid; allowed {FORGET_LOSSES}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection={self.selection!r} invalid; allowed {SELECTIONS}")
        if not math.isfinite(self.init_log_alpha):
            raise ValueError(f"init_log_alpha={self.init_log_alpha} invalid; allowed: a finite float")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)):
            raise ValueError(f"layers={self.layers!r} invalid; allowed: None or distinct non-negative ints")


@dataclass(frozen=True)
class _Batch:
    """One training step's samples: forget indices, their neighbours' indices, the neighbours' original log-probs."""

    forget: list[int]  # (B,) indices into inputs.forget
    neighbours: list[int]  # (B·K,) indices into inputs.neighbours, K per forget sample in order
    reference: Tensor  # (n, V): the original model's log-probs at the neighbours' scored tokens


def neighbours_per_sample(inputs: Inputs) -> int:
    """K = len(neighbours) / len(forget); ValueError unless it is a positive integer."""
    if inputs.neighbours is None:
        raise ValueError("inputs.neighbours is None; NeuMuter needs K >= 1 neighbours per forget sample")
    n_f, n_n = len(inputs.forget), len(inputs.neighbours)
    if n_f == 0 or n_n == 0 or n_n % n_f:
        raise ValueError(f"{n_n} neighbours for {n_f} forget samples; allowed: a positive multiple of {n_f}")
    return n_n // n_f


def masked_layers(adapter: FFNAdapter, cfg: Config) -> tuple[int, ...]:
    """The layers to mask: cfg.layers (validated against the model) or all of them."""
    if cfg.layers is None:
        return tuple(range(adapter.n_layers))
    if max(cfg.layers) >= adapter.n_layers:
        raise ValueError(f"layers={cfg.layers!r} invalid; allowed: 0..{adapter.n_layers - 1}")
    return tuple(sorted(cfg.layers))


def forget_weight(mean_nll: float, cfg: Config) -> float:
    """The forget term's weight: −1 (ascent), or −1 / +5 at or below / above cfg.ceiling (public code)."""
    if cfg.forget_loss == "ascent" or mean_nll <= cfg.ceiling:
        return WEIGHT_BELOW_CEILING
    return WEIGHT_ABOVE_CEILING


def log_probs(logits: Tensor) -> Tensor:
    """log-softmax over the vocabulary, in at least float32 (half-precision KL terms would be noise)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def neighbour_kl(logits: Tensor, reference: Tensor) -> Tensor:
    """KL(original ‖ current) summed over scored tokens: logits, reference (n, V) -> scalar."""
    return F.kl_div(log_probs(logits), reference, reduction="sum", log_target=True)


def _make_batches(model: nn.Module, inputs: Inputs, k: int, batch_size: int) -> list[_Batch]:
    """Each step's forget and neighbour indices, and the neighbours' original log-probs (computed once)."""
    out = []
    for index in batches(len(inputs.forget), batch_size):
        near = [j * k + i for j in index for i in range(k)]
        with torch.no_grad():  # the unmasked model is the original: no second copy needed
            reference = log_probs(inputs.family.scored_logits(model, inputs.neighbours, near)[0])
        out.append(_Batch(index, near, reference))
    return out


def mean_nll(model: nn.Module, family: Family, samples: Any) -> float:
    """Mean NLL per scored token of `samples`, no gradient."""
    with torch.no_grad():
        total = sum(float(family.nll_sum(model, samples, index)) for index in batches(len(samples), family.batch_size))
    return total / family.count(samples, list(range(len(samples))))


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and requires_grad False on every model parameter; both restored afterwards."""
    was_training = model.training
    try:
        with frozen_parameters(model):
            model.eval()
            yield
    finally:
        model.train(was_training)


def _step(model: nn.Module, adapter: FFNAdapter, mask: HardConcreteMask, inputs: Inputs, batch: _Batch, cfg: Config,
          generator: torch.Generator, optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """One Eq. 13 step on a batch; returns (mean per-token forget NLL, KL per neighbour sample)."""
    family = inputs.family
    gates = mask.sample(generator) if cfg.sample_gates else mask.deterministic()
    with gated(adapter, mask.layers, gates):  # one gate draw for the forget and the neighbour forward
        nll_sum = family.nll_sum(model, inputs.forget, batch.forget)
        kl = neighbour_kl(family.scored_logits(model, inputs.neighbours, batch.neighbours)[0], batch.reference)
    mean = float(nll_sum.detach()) / family.count(inputs.forget, batch.forget)
    kl = kl / len(batch.neighbours)
    loss = forget_weight(mean, cfg) * nll_sum / len(batch.forget) + cfg.lambda_kl * kl + cfg.eta_l0 * mask.l0()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return mean, float(kl.detach())


def train_mask(model: nn.Module, adapter: FFNAdapter, inputs: Inputs, cfg: Config,
               check: Check | None = None) -> tuple[HardConcreteMask, list[dict[str, Any]]]:
    """Train the mask for cfg.passes passes (or until `check(mask, entry)` is True); model left unchanged."""
    k = neighbours_per_sample(inputs)
    param = next(model.parameters())
    dtype = torch.promote_types(param.dtype, torch.float32)  # Adam on half-precision log α would stall
    mask = HardConcreteMask(masked_layers(adapter, cfg), adapter.d_ff, cfg.beta, cfg.init_log_alpha,
                            dtype=dtype, device=param.device)
    generator = torch.Generator(device=param.device).manual_seed(inputs.seed)
    optimizer = torch.optim.Adam([mask.log_alpha], lr=cfg.learning_rate)
    history: list[dict[str, Any]] = []
    with _frozen(model):
        plan = _make_batches(model, inputs, k, cfg.batch_size)
        for done in range(1, cfg.passes + 1):
            stats = [_step(model, adapter, mask, inputs, b, cfg, generator, optimizer) for b in plan]
            history.append({"pass": done, "steps": done * len(plan), "l0": float(mask.l0().detach()),
                            "forget_nll": sum(s[0] for s in stats) / len(stats),
                            "kl": sum(s[1] for s in stats) / len(stats)})
            due = done % cfg.check_every == 0 or done == cfg.passes
            if check is not None and due and check(mask, history[-1]):
                break
    return mask, history


def threshold(values: Tensor, cfg: Config) -> float:
    """ε of the energy rule (−inf if no value fits), or gate_threshold as a mask value (1.2 t − 0.1)."""
    if cfg.selection == "gate_threshold":
        return WIDTH * cfg.gate_threshold + GAMMA
    ordered = values.detach().flatten().abs().sort().values
    within = (ordered.cumsum(0) <= cfg.energy_fraction * ordered.sum()).nonzero()
    return float(ordered[within.max()]) if within.numel() else float("-inf")


def select(values: Tensor, cfg: Config) -> Tensor:
    """Boolean selection (same shape as the deterministic mask `values`) of the neurons to scale."""
    eps = threshold(values, cfg)
    if cfg.selection == "gate_threshold":
        return values < eps
    return (values.abs() <= eps) & (values < 1.0)


def removal_scales(values: Tensor, selected: Tensor) -> Tensor:
    """Eq. 14: a selected neuron keeps its mask value, every other neuron 1."""
    if values.shape != selected.shape:
        raise ValueError(f"values {tuple(values.shape)} and selected {tuple(selected.shape)} shapes differ")
    return torch.where(selected, values, torch.ones_like(values))


def apply_removal(adapter: FFNAdapter, values: Tensor, selected: Tensor,
                  layers: tuple[int, ...] | None = None) -> None:
    """Write Eq. 14 into the weights: scale selected neurons' down-proj columns by their mask value."""
    layers = tuple(range(values.shape[0])) if layers is None else tuple(layers)
    if values.dim() != 2 or values.shape != (len(layers), adapter.d_ff):
        raise ValueError(f"values shape {tuple(values.shape)} invalid; expected ({len(layers)}, {adapter.d_ff})")
    scales = removal_scales(values.detach(), selected)
    for row, layer in enumerate(layers):
        neurons = selected[row].nonzero().flatten().cpu()
        if neurons.numel():
            columns = adapter.get_columns(layer, neurons)  # (k, d_model)
            factors = scales[row, neurons.to(scales.device)].to(columns)
            adapter.set_columns(layer, neurons, columns * factors[:, None])


def _finite(x: float) -> float | None:
    """x, or None where it is not finite (details must be plain JSON)."""
    return x if math.isfinite(x) else None


def _stop_check(model: nn.Module, adapter: FFNAdapter, inputs: Inputs, cfg: Config) -> Check:
    """The Eq. 17 MA test under the current selection's Eq. 14 scaling (hooks); records it in the entry."""
    def check(mask: HardConcreteMask, entry: dict[str, Any]) -> bool:
        values = mask.deterministic().detach()
        selected = select(values, cfg)
        with gated(adapter, mask.layers, removal_scales(values, selected)):
            reached, max_ma = forgotten(model, inputs)
        entry.update(selected=int(selected.sum()), epsilon=_finite(threshold(values, cfg)),
                     max_ma=max_ma, reached=reached)
        return reached
    return check


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Train the mask until the selection's scaling forgets D_f (or passes run out), then write it in."""
    adapter = FFNAdapter.for_model(model)
    torch.manual_seed(inputs.seed)
    mask, history = train_mask(model, adapter, inputs, cfg, _stop_check(model, adapter, inputs, cfg))
    values = mask.deterministic().detach()
    selected = select(values, cfg)
    apply_removal(adapter, values, selected, mask.layers)
    reached, _ = forgotten(model, inputs)
    details = {
        "forget_loss": cfg.forget_loss, "selection": cfg.selection, "layers": list(mask.layers),
        "selected_per_layer": [int(n) for n in selected.sum(1)], "epsilon": _finite(threshold(values, cfg)),
        "forget_nll": mean_nll(model, inputs.family, inputs.forget),
        "last_pass_forget_nll": history[-1]["forget_nll"], "last_pass_kl": history[-1]["kl"],
        "history": [h for h in history if "reached" in h],  # one entry per stop check
        "ma": [float(m) for m in inputs.family.memorization(model, inputs.forget)],
    }
    chosen = tuple((mask.layers[row], int(n)) for row, n in selected.nonzero().tolist())
    return Report(reached=reached if inputs.stop is not None else None, strength=float(selected.sum()),
                  strength_name="neurons", steps=int(history[-1]["steps"]), trainable=mask.log_alpha.numel() * adapter.d_model,
                  neurons=chosen, details=details)
