"""Selective Pruning (Pochinkov & Schoots, paper 004): neuron statistics, scores, pruning, metrics, for both families.

Neurons, two kinds:
- "ffn": coordinate i of the INPUT of a layer's FFN down-projection (lib.core.adapter's definition);
- "attn": coordinate i of the INPUT of a layer's attention output projection (the concatenated heads),
  read with a forward pre-hook on `adapter.attention_output(layer)`.
Statistics: one forward per batch of samples; float64 running sums over the positions that stand for them
(the family's `positions`: every real token of a causal sequence, the paper's; a masked row's [MASK], the
masked-LM analogue) (count, Σ|a|, #(a > 0), Σ√|a|, Σa, Σa²), no per-token Python loop. From them the five
importance functions: mean_abs, freq_pos, mean_sqrt, std (the real standard deviation √(E[a²] − E[a]²),
clamped at 0; the public code's "std" is the variance) and rms √E[a²]. `max_tokens` stops collection after
the batch that reaches it.
Score = I(forget) / (I(retain) + ε), ε = 1e-3 for FFN and 1e-4 for attention (the code's values). Each step
prunes the global top fraction (over all layers) of the not-yet-pruned neurons of each kind, with statistics
recomputed after every step on the pruned model. Pruning zeroes the neuron's output-weight column; that
leaves the neuron's own input unchanged, so an explicit pruned mask keeps a neuron from being picked twice.

Defaults (the paper's main experiment, as run by the public scripts exp1-is-effective/prune-llms.sh):
2 % of all FFN neurons per step and 0 % of attention neurons (`--ff_frac 0.02 --attn_frac 0.00`), about 1e5
tokens per dataset. Importance: mean_abs for both kinds — those scripts pass no scoring flag, so the code's
default scoring "abs" (mean |a|) is what produced the main results; frequency of a > 0 is only meaningful for
ReLU-like FFNs and says little for attention neurons, which have no activation function.

Metrics (the paper's): pooled top-1 and top-10 accuracy at every scored token (next tokens; a masked row's
[MASK]), and "skip" variants that ignore gold tokens among the 50 most frequent scored tokens of a set.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.families.causal import batches
from lib.methods import Family

KINDS = ("ffn", "attn")
IMPORTANCES = ("mean_abs", "freq_pos", "mean_sqrt", "std", "rms")
EPS = {"ffn": 1e-3, "attn": 1e-4}  # the public code's ff_eps / attn_eps


@dataclass
class RunningStats:
    """float64 running sums per (layer, neuron) of one neuron kind over valid tokens."""

    count: Tensor  # (L,) tokens seen per layer
    sum_abs: Tensor  # (L, n)
    n_pos: Tensor  # (L, n) tokens with a > 0
    sum_sqrt: Tensor  # (L, n) Σ √|a|
    total: Tensor  # (L, n) Σ a
    sum_sq: Tensor  # (L, n) Σ a²

    @classmethod
    def zeros(cls, n_layers: int, width: int, device: torch.device | str = "cpu") -> "RunningStats":
        """Empty accumulators for `n_layers` layers of `width` neurons."""
        z = lambda: torch.zeros((n_layers, width), dtype=torch.float64, device=device)  # noqa: E731
        return cls(torch.zeros(n_layers, dtype=torch.float64, device=device), z(), z(), z(), z(), z())

    def add(self, layer: int, acts: Tensor) -> None:
        """Accumulate activations `acts` (N, n) of valid tokens of `layer`."""
        a = acts.detach().to(device=self.sum_abs.device, dtype=torch.float64)
        mag = a.abs()
        self.count[layer] += a.shape[0]
        self.sum_abs[layer] += mag.sum(0)
        self.n_pos[layer] += (a > 0).sum(0)
        self.sum_sqrt[layer] += mag.sqrt().sum(0)
        self.total[layer] += a.sum(0)
        self.sum_sq[layer] += (a * a).sum(0)

    def mean(self, sums: Tensor) -> Tensor:
        """Per-layer mean of `sums` (L, n); NaN-free (0) for a layer that saw no token."""
        return sums / self.count.clamp(min=1).unsqueeze(1)

    def importance(self, name: str) -> Tensor:
        """Importance function `name` (one of IMPORTANCES) per neuron (L, n)."""
        if name not in IMPORTANCES:
            raise ValueError(f"importance {name!r} unknown; allowed: {', '.join(IMPORTANCES)}")
        if name == "mean_abs":
            return self.mean(self.sum_abs)
        if name == "freq_pos":
            return self.mean(self.n_pos)
        if name == "mean_sqrt":
            return self.mean(self.sum_sqrt)
        if name == "rms":
            return self.mean(self.sum_sq).sqrt()
        return (self.mean(self.sum_sq) - self.mean(self.total) ** 2).clamp(min=0).sqrt()


def attn_outputs(adapter: FFNAdapter) -> list[nn.Module]:
    """Every layer's attention output projection; ValueError if the adapter does not know it."""
    adapter.attention_width(0)  # raises, naming the model type, when the entry lacks attn_out
    return [adapter.attention_output(layer) for layer in range(adapter.n_layers)]


def widths(adapter: FFNAdapter, kinds: Iterable[str] = KINDS) -> dict[str, int]:
    """Neurons per layer of each kind."""
    kinds = tuple(kinds)
    check_kinds(kinds)
    return {k: adapter.d_ff if k == "ffn" else adapter.attention_width(0) for k in kinds}


def check_kinds(kinds: Iterable[str]) -> None:
    """Raise ValueError for a neuron kind other than KINDS."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"neuron kind {kind!r} unknown; allowed: {', '.join(KINDS)}")


@contextmanager
def accumulating(adapter: FFNAdapter, stats: dict[str, RunningStats], valid: list[Tensor]) -> Iterator[None]:
    """Hooks adding each forward's neuron inputs at the positions `valid[0]` (B, T) into `stats`.

    Accumulating inside the hooks (not after the forward) keeps one layer's activations alive at a time.
    """
    def add(kind: str, layer: int, x: Tensor) -> Tensor:
        """Accumulate x (B, T, n) of `layer` at the valid positions and pass it on unchanged."""
        stats[kind].add(layer, x.detach()[valid[0]])
        return x

    def attn_hook(layer: int) -> Callable[[nn.Module, tuple], None]:
        """Pre-hook on `layer`'s attention output projection (returns None: the input stays as is)."""
        def hook(_mod: nn.Module, args: tuple) -> None:
            add("attn", layer, args[0])
        return hook

    handles = []
    try:
        if "attn" in stats:
            handles = [mod.register_forward_pre_hook(attn_hook(layer))
                       for layer, mod in enumerate(attn_outputs(adapter))]
        if "ffn" in stats:
            with adapter.patch(lambda layer, x: add("ffn", layer, x)):
                yield
        else:
            yield
    finally:  # hooks must never outlive the block
        for handle in handles:
            handle.remove()


def collect_stats(model: nn.Module, adapter: FFNAdapter, family: Family, samples: Any, batch_size: int = 8,
                  max_tokens: int | None = None, kinds: Iterable[str] = KINDS) -> dict[str, RunningStats]:
    """Running statistics per neuron kind at the positions that stand for the samples (family.positions: every
    real token of a causal sequence, a masked row's [MASK]), up to the batch reaching max_tokens positions."""
    device = next(model.parameters()).device
    stats = {k: RunningStats.zeros(adapter.n_layers, w, device) for k, w in widths(adapter, tuple(kinds)).items()}
    valid: list[Tensor] = []  # the current batch's chosen positions, read by the hooks
    seen = 0
    with torch.no_grad(), accumulating(adapter, stats, valid):
        for index in batches(len(samples), batch_size):
            ids, mask, chosen = family.positions(model, samples, index)
            valid[:] = [chosen]
            model(input_ids=ids, attention_mask=mask)
            seen += int(chosen.sum())
            if max_tokens is not None and seen >= max_tokens:
                break
    return stats


def scores(forget: Tensor, retain: Tensor, eps: float) -> Tensor:
    """Selective-pruning score I_forget / (I_retain + eps), elementwise."""
    return forget / (retain + eps)


def n_to_prune(total: int, fraction: float) -> int:
    """Neurons pruned per step: int(fraction · total), at least 1 when fraction > 0 (so a step always acts)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} invalid; allowed: 0 <= fraction <= 1")
    return max(1, int(fraction * total)) if fraction > 0 else 0


def select_top(score: Tensor, fraction: float, pruned: Tensor) -> Tensor:
    """Bool mask (L, n) of the global top `fraction` of all neurons by score, among those not in `pruned`."""
    if score.shape != pruned.shape:
        raise ValueError(f"score shape {tuple(score.shape)} != pruned shape {tuple(pruned.shape)}")
    k = min(n_to_prune(score.numel(), fraction), int((~pruned).sum()))
    flat_pruned = pruned.flatten()
    free = score.double().flatten()
    free = torch.where(free.isnan(), float("-inf"), free)  # a NaN score never outranks a real one
    chosen = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    order = torch.argsort(free, descending=True, stable=True)  # stable: ties go to the lower index
    order = order[~flat_pruned[order]]  # pruned neurons are never candidates, whatever their score
    chosen[order[:k]] = True
    return chosen.view_as(pruned)


def choose(forget: dict[str, RunningStats], retain: dict[str, RunningStats], pruned: dict[str, Tensor],
           fractions: dict[str, float], importances: dict[str, str],
           eps: dict[str, float] | None = None) -> dict[str, Tensor]:
    """One step's new picks per kind of `fractions`: global top fraction of the scores, skipping `pruned`."""
    eps = EPS if eps is None else eps
    out = {}
    for kind, fraction in fractions.items():
        imp = importances[kind]
        score = scores(forget[kind].importance(imp), retain[kind].importance(imp), eps[kind])
        out[kind] = select_top(score, fraction, pruned[kind].to(score.device))
    return out


def prune_ffn(adapter: FFNAdapter, layer: int, neurons: Tensor) -> None:
    """Zero the output-weight columns of FFN `neurons` in `layer`."""
    zeros = torch.zeros((neurons.numel(), adapter.d_model), dtype=torch.float64)
    adapter.set_columns(layer, neurons, zeros)


def apply_pruning(adapter: FFNAdapter, kind: str, chosen: Tensor) -> None:
    """Zero the output columns of every neuron marked in `chosen` (L, n) of `kind`."""
    check_kinds([kind])
    for layer in range(adapter.n_layers):
        idx = chosen[layer].nonzero().flatten().cpu()
        if idx.numel() == 0:
            continue
        if kind == "ffn":
            prune_ffn(adapter, layer, idx)
        else:
            adapter.zero_attention_inputs(layer, idx)


def frequent_tokens(ids: Iterable[int], n: int = 50) -> set[int]:
    """The `n` most frequent of the token ids (a family's scored ids; ties: smaller id first)."""
    if n < 0:
        raise ValueError(f"n={n!r} invalid; allowed: n >= 0")
    ranked = sorted(Counter(ids).items(), key=lambda item: (-item[1], item[0]))
    return {tok for tok, _ in ranked[:n]}


def accuracy_counts(logits: Tensor, targets: Tensor, valid: Tensor, skip: Iterable[int] = (),
                    ks: tuple[int, ...] = (1, 10)) -> dict[str, tuple[int, int]]:
    """(hits, positions) of top-k accuracy for each k, and "_skip" variants ignoring gold tokens in `skip`."""
    top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices  # (B, T, kmax), best first
    match = top == targets.unsqueeze(-1)
    skip_ids = torch.tensor(sorted(set(skip)), dtype=targets.dtype, device=targets.device)
    kept = valid & ~torch.isin(targets, skip_ids)
    out: dict[str, tuple[int, int]] = {}
    for k in ks:
        hit = match[..., :k].any(-1)
        out[f"top{k}"] = (int((hit & valid).sum()), int(valid.sum()))
        out[f"top{k}_skip"] = (int((hit & kept).sum()), int(kept.sum()))
    return out


def scored_accuracy(model: nn.Module, family: Family, samples: Any, batch_size: int = 8,
                    skip: Iterable[int] = (), ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Pooled top-k accuracies over every scored token of `samples` (causal: each next token; masked: each [MASK]),
    and the variants that skip gold tokens in `skip`."""
    totals: Counter[str] = Counter()
    skip = frozenset(skip)
    with torch.no_grad():
        for index in batches(len(samples), batch_size):
            logits, gold = family.scored_logits(model, samples, index)  # (n, V), (n,)
            counts = accuracy_counts(logits, gold, torch.ones_like(gold, dtype=torch.bool), skip, ks)
            for key, (hits, n) in counts.items():
                totals[key + ":hits"] += hits
                totals[key + ":n"] += n
    keys = [f"top{k}{s}" for k in ks for s in ("", "_skip")]
    return {key: totals[key + ":hits"] / totals[key + ":n"] if totals[key + ":n"] else float("nan") for key in keys}