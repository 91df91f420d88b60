"""GARE baseline (SNKU paper, Appendix B): gradient ascent on k random FFN neurons' output weights.

k neurons are drawn uniformly over all layers (the random control's draw); only their
down-projection columns are trained, by MAXIMIZING the family's mean NLL of the forget set.
Exactness: the optimizer sees one delta tensor per layer holding only the selected columns,
added through a forward hook and written back with `adapter.set_columns` at the end, so every
other parameter stays bit-identical.

Masked LMs: `inputs.forget` are the memorized secrets' masked rows (each secret token masked
alone; the loss is the cross-entropy at the [MASK], as in the paper). Causal LMs (the natural
analogue): the forget samples' next-token NLL over their scored tokens.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from transformers import get_linear_schedule_with_warmup

from lib.core.adapter import FFNAdapter
from lib.core.attribution import frozen_parameters
from lib.core.params import Count, Fraction, Positive, check_ranges
from lib.methods import Family, Inputs, Report
from lib.methods.random import draw_neurons

label = "GARE"  # the name every report prints
families = ("masked", "causal")
needs = ("forget",)
kind = "neurons"


@dataclass(frozen=True)
class Config:
    """Neuron budget and the paper's AdamW recipe (lr 5e-5, 20 epochs, batch 8, 10% warm-up)."""

    k: Count = 300
    learning_rate: Positive = 5e-5
    epochs: Count = 20
    batch_size: Count = 8
    warmup_fraction: Fraction = 0.1

    def __post_init__(self) -> None:
        """Reject values the optimisation cannot use."""
        check_ranges(self)


@dataclass(frozen=True)
class AscentLog:
    """Optimizer steps taken and the mean forget loss of each epoch (it should rise)."""

    steps: int
    epoch_losses: tuple[float, ...]


def group_by_layer(neurons: tuple[tuple[int, int], ...]) -> dict[int, Tensor]:
    """Map layer -> sorted neuron indices (k_l,) of the (layer, neuron) pairs."""
    layers: dict[int, list[int]] = {}
    for layer, neuron in neurons:
        layers.setdefault(layer, []).append(neuron)
    return {layer: torch.tensor(sorted(idx), dtype=torch.long) for layer, idx in sorted(layers.items())}


@contextmanager
def column_deltas(adapter: FFNAdapter, groups: dict[int, Tensor]) -> Iterator[dict[int, Tensor]]:
    """Yield trainable zero deltas (k_l, d_model) per layer, added to those columns by hooks."""
    deltas = {layer: torch.zeros(len(idx), adapter.d_model, requires_grad=True,
                                 device=adapter.down_proj(layer).weight.device)
              for layer, idx in groups.items()}

    def make_hook(layer: int) -> Callable[[nn.Module, tuple, Tensor], Tensor]:
        """Forward hook adding x[..., idx] @ delta: the same as adding delta to the columns."""
        idx = groups[layer]

        def hook(_mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
            """Down-projection output (B, T, d_model) plus the selected columns' delta."""
            x = args[0][..., idx.to(args[0].device)]  # (B, T, k_l)
            return out + x @ deltas[layer].to(x.dtype)  # (B, T, d_model)
        return hook

    handles = [adapter.down_proj(layer).register_forward_hook(make_hook(layer)) for layer in groups]
    try:
        yield deltas
    finally:  # hooks must never outlive the block
        for handle in handles:
            handle.remove()


def forget_loss(model: nn.Module, family: Family, samples: object, index: list[int]) -> Tensor:
    """The family's mean NLL over the scored tokens of forget samples `index` (masked: the [MASK] rows)."""
    return family.nll_sum(model, samples, index) / family.count(samples, index)


def ascend(model: nn.Module, family: Family, samples: object, deltas: dict[int, Tensor], cfg: Config,
           seed: int) -> AscentLog:
    """AdamW gradient ascent on the forget loss over `deltas` only, seeded order and dropout."""
    n = len(samples)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    # weight decay 0 (the HF Trainer default): decaying a delta is not decaying the weight
    optim = torch.optim.AdamW(list(deltas.values()), lr=cfg.learning_rate, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), total)
    gen, epoch_losses = torch.Generator().manual_seed(seed), []
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).tolist()  # (N,)
        losses = []
        for start in range(0, n, cfg.batch_size):
            loss = forget_loss(model, family, samples, order[start:start + cfg.batch_size])
            (-loss).backward()  # ascent: minimise the negated loss
            optim.step(), sched.step(), optim.zero_grad(set_to_none=True)
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
    return AscentLog(steps=total, epoch_losses=tuple(epoch_losses))


def write_back(adapter: FFNAdapter, groups: dict[int, Tensor], deltas: dict[int, Tensor]) -> None:
    """Add each trained delta to its columns: w_new = w_old + delta (in float32, rounded once)."""
    with torch.no_grad():
        for layer, idx in groups.items():
            old = adapter.get_columns(layer, idx)  # (k_l, d_model)
            new = old.float() + deltas[layer].detach().to(old.device)  # (k_l, d_model)
            adapter.set_columns(layer, idx, new)


def check_rows(samples: object) -> None:
    """Reject an empty forget set."""
    if samples is None or len(samples) == 0:
        raise ValueError("the forget set is empty; GARE needs at least one memorized sample")


def _cuda_devices(model: nn.Module) -> list[int]:
    """Indices of the CUDA devices holding the model's parameters (their RNGs get forked)."""
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def train_columns(model: nn.Module, adapter: FFNAdapter, groups: dict[int, Tensor], family: Family,
                  samples: object, cfg: Config, seed: int) -> AscentLog:
    """Gradient-ascend only the `groups` columns on the forget samples, then write them into the model."""
    was_training = model.training
    # fork_rng: dropout is seeded without disturbing the caller's global RNG stream
    rng_fork = torch.random.fork_rng(devices=_cuda_devices(model))
    with rng_fork, frozen_parameters(model), column_deltas(adapter, groups) as deltas:
        torch.manual_seed(seed)
        model.train()  # dropout on, as in the fine-tuning recipe the paper reuses
        try:
            log = ascend(model, family, samples, deltas, cfg, seed)
        finally:
            model.train(was_training)
    write_back(adapter, groups, deltas)
    return log


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Gradient-ascend k random neurons' columns on the forget set, in place."""
    check_rows(inputs.forget)
    adapter = FFNAdapter.for_model(model)
    start = time.perf_counter()
    neurons = draw_neurons(adapter.n_layers, adapter.d_ff, cfg.k, inputs.seed)
    selected = time.perf_counter()
    log = train_columns(model, adapter, group_by_layer(neurons), inputs.family, inputs.forget, cfg, inputs.seed)
    return Report(strength=float(len(neurons)), strength_name="neurons", steps=log.steps,
                  trainable=cfg.k * adapter.d_model, neurons=neurons, selection_seconds=selected - start,
                  edit_seconds=time.perf_counter() - selected, details={"epoch_losses": list(log.epoch_losses)})
