"""DEPN (Wu et al., 2023): detect privacy neurons by Integrated Gradients, zero their outputs.

Detector: IG (lib.core.ig) of every FFN neuron at each masked secret token, objective the
gold token's probability, zero baseline, left Riemann grid (m = 20). Aggregator: per text
(= one secret record; its masked variants' scores are summed, grouped by record_index)
keep neurons whose score is >= per_text_threshold * that text's max (and > 0); rank the
kept neurons by how many texts kept them (ties: larger summed score, then lower
(layer, neuron)). Editor: zero the top-k neurons' output-weight columns.

Deliberately NOT copied from the public code: it ranks the token one position off, its
`--do_random_kn False` flag parses as True (a random-neuron run), and it overwrites
NAME/RANDOM columns with the [UNK] embedding.

The IG itself (steps, grid, objective: params section `ig`) is computed once per forget set
by the pipeline's `ig` stage (lib.core.ig on the forget targets) and arrives in `stats.ig`
with `stats.ig_owner` (which text each row belongs to); APNEAP reuses the same selection.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.core.editing import zero_neurons
from lib.core.params import Count, Fraction, check_ranges
from lib.methods import Inputs, Report, Stats

label = "DEPN"  # the name every report prints
families = ("masked", "causal")
needs = ("ig",)
kind = "neurons"
AGGREGATES = ("frequency", "sum")


@dataclass(frozen=True)
class Config:
    """DEPN detector (IG), aggregator (threshold, ranking) and editor (k) parameters."""

    per_text_threshold: Fraction = 0.1  # a share of the text's max IG
    k: Count = 300
    aggregate: str = "frequency"  # "sum": rank kept neurons by summed score only

    def __post_init__(self) -> None:
        """Reject values the algorithm cannot use."""
        check_ranges(self)
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={self.aggregate!r} invalid; allowed {AGGREGATES}")


def per_text_scores(ig_scores: Tensor, record_index: Tensor) -> Tensor:
    """Sum each record's rows: (R, L, d_ff) -> (n_texts, L, d_ff), texts in sorted record order."""
    if ig_scores.dim() != 3:
        raise ValueError(f"ig_scores shape {tuple(ig_scores.shape)} invalid; expected (R, L, d_ff)")
    if record_index.shape != ig_scores.shape[:1] or record_index.is_floating_point():
        raise ValueError(f"record_index shape {tuple(record_index.shape)} invalid; "
                         f"expected integer ({ig_scores.shape[0]},)")
    _, text_of_row = torch.unique(record_index, return_inverse=True)  # (R,) dense 0..n-1
    n_texts = int(text_of_row.max()) + 1 if text_of_row.numel() else 0
    flat = ig_scores.detach().double().flatten(1)  # (R, L*d_ff)
    summed = torch.zeros(n_texts, flat.shape[1], dtype=torch.float64).index_add_(0, text_of_row, flat)
    return summed.view(n_texts, *ig_scores.shape[1:])  # (n, L, d_ff)


def select_depn(ig_scores: Tensor, record_index: Tensor, cfg: Config) -> tuple[tuple[int, int], ...]:
    """DEPN's top-k (layer, neuron) pairs from per-row IG (R, L, d_ff), in rank order."""
    texts = per_text_scores(ig_scores, record_index)  # (n, L, d_ff)
    n_texts, _, d_ff = texts.shape
    peak = texts.flatten(1).max(dim=1).values.view(n_texts, 1, 1)  # (n, 1, 1)
    kept = (texts >= cfg.per_text_threshold * peak) & (texts > 0)  # (n, L, d_ff)
    frequency = kept.sum(dim=0).flatten().double()  # (L*d_ff,)
    summed = texts.sum(dim=0).flatten()  # (L*d_ff,)
    candidates = frequency.nonzero().flatten()  # (c,) ascending flat index = (layer, neuron) order
    if cfg.k > candidates.numel():
        raise ValueError(f"k={cfg.k} exceeds the {candidates.numel()} neurons kept by the "
                         f"per-text threshold {cfg.per_text_threshold}; allowed: k <= {candidates.numel()}")
    # stable sorts, least significant key first: summed score, then frequency
    order = candidates[torch.sort(summed[candidates], descending=True, stable=True).indices]
    if cfg.aggregate == "frequency":
        order = order[torch.sort(frequency[order], descending=True, stable=True).indices]
    return tuple((int(i) // d_ff, int(i) % d_ff) for i in order[:cfg.k])


def check_ig(stats: Stats, adapter: FFNAdapter, method: str = "depn") -> tuple[Tensor, Tensor]:
    """(IG (R, L, d_ff), owner (R,)) from the stats; ValueError naming `method` when missing or misshapen."""
    if stats.ig is None or stats.ig_owner is None:
        raise ValueError(f"{method} needs stats.ig (R, L, d_ff) and stats.ig_owner (R,): run the ig stage first")
    if tuple(stats.ig.shape[1:]) != (adapter.n_layers, adapter.d_ff):
        raise ValueError(f"ig shape {tuple(stats.ig.shape)} does not match (R, n_layers, d_ff) = "
                         f"(R, {adapter.n_layers}, {adapter.d_ff})")
    return stats.ig, stats.ig_owner


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Select DEPN privacy neurons from precomputed IG and zero their output weights in place."""
    adapter = FFNAdapter.for_model(model)
    start = time.perf_counter()
    neurons = select_depn(*check_ig(inputs.stats, adapter), cfg)
    selected = time.perf_counter()
    zero_neurons(adapter, neurons)
    return Report(strength=float(len(neurons)), strength_name="neurons", steps=1,
                  trainable=len(neurons) * adapter.d_model, neurons=neurons, selection_seconds=selected - start,
                  edit_seconds=time.perf_counter() - selected)
