"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, the WMDP paper).

RMU scrambles the model's internal state on the forget set instead of training its outputs: at one block
ℓ (`layer`) the residual stream h_ℓ(x) of every forget position is pulled toward a fixed random vector c·u
(u uniform in [0, 1)^d, normalised, seeded), while on the retain set h_ℓ is held at what the model computed
before unlearning (read once, before the first step: no second model copy):

    L = mean ||h_ℓ(x_f) − c·u||² + α · mean ||h_ℓ(x_r) − h_ℓ^before(x_r)||²     (means over positions and units)

Only the FFN down-projections of blocks ℓ−`update_layers`+1 .. ℓ are trained (the paper trains the MLP
output weights of layers 5-7 and steers layer 7 of 32 in Zephyr-7B), with AdamW, until every forget sample
meets the stop threshold (or `max_steps`). Positions are the family's: every real token of a causal sample,
the [MASK] of a masked row. The paper's steering coefficient c (6.5 on Zephyr) is tied to that model's
activation scale; here `steering` None sets c to the mean norm of h_ℓ over the forget positions before
unlearning, so the target is as long as a typical state and points nowhere the model uses. The block output is
read with a forward hook on the adapter's block module, so RMU runs on every architecture the adapter knows.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lib.core.adapter import FFNAdapter
from lib.core.params import Count, Natural, NonNegative, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import cycling_batches, optimise, stop_rule, training_report

label = "RMU"  # the name every report prints
families = ("masked", "causal")
needs = ("forget", "retain")
kind = "weights"


@dataclass(frozen=True)
class Config:
    """RMU hyper-parameters: steered block, trained blocks, steering length c, retain weight α, AdamW, steps."""

    layer: Natural | None = None  # block whose output is steered; None: a quarter of the depth (the paper's 7 of 32)
    update_layers: Count = 3  # down-projections of blocks layer-2 .. layer are trained (the paper's 5, 6, 7)
    steering: Positive | None = None  # c; None: the mean norm of the block's forget states before unlearning
    alpha: NonNegative = 100.0  # retain weight (the paper: 1200 on Zephyr-7B, whose states are larger)
    learning_rate: Positive = 5e-5  # the paper's
    batch_size: Count = 16
    max_steps: Count = 100
    seed: Natural = 0  # the random direction u

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)


def steered_layer(adapter: FFNAdapter, cfg: Config) -> int:
    """The block RMU steers: cfg.layer, or a quarter of the depth."""
    layer = adapter.n_layers // 4 if cfg.layer is None else cfg.layer
    if not 0 <= layer < adapter.n_layers:
        raise ValueError(f"rmu layer={layer}; allowed: 0..{adapter.n_layers - 1} (this model's blocks)")
    return layer


def trained_parameters(model: nn.Module, adapter: FFNAdapter, layer: int, update_layers: int) -> list[nn.Parameter]:
    """The down-projection weights (and biases) of blocks layer-update_layers+1 .. layer."""
    names = [n for lay in range(max(0, layer - update_layers + 1), layer + 1) for n in adapter.weight_names(lay)]
    return [model.get_parameter(name) for name in names]


@contextmanager
def block_output(block: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the block's output hidden states (B, T, d) on every forward while open."""
    seen: list[Tensor] = []

    def hook(_module: nn.Module, _args: Any, out: Any) -> None:
        """Keep the hidden states (blocks return them alone or first in a tuple)."""
        seen.append(out[0] if isinstance(out, tuple) else out)

    handle = block.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def _block_states(model: nn.Module, inputs: Inputs, block: nn.Module, samples: Any,
                  index: Sequence[int]) -> tuple[Tensor, Tensor]:
    """One forward of samples `index`: the block's output (B, T, d) and the positions standing for them (B, T)."""
    ids, mask, chosen = inputs.family.positions(model, samples, index)
    with block_output(block) as seen:
        model(input_ids=ids, attention_mask=mask)
    return seen[0], chosen


def states(model: nn.Module, inputs: Inputs, block: nn.Module, samples: Any, index: Sequence[int]) -> Tensor:
    """The block's output at the positions standing for samples `index` (P, d), float32, differentiable."""
    hidden, chosen = _block_states(model, inputs, block, samples, index)
    return hidden[chosen].float()


def frozen_states(model: nn.Module, inputs: Inputs, block: nn.Module, samples: Any,
                  batch_size: int) -> list[Tensor]:
    """Per sample, the block's output at its positions before unlearning (P_i, d), no gradient."""
    out: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            index = list(range(start, min(start + batch_size, len(samples))))
            hidden, chosen = _block_states(model, inputs, block, samples, index)
            out += [hidden[r][chosen[r]].float() for r in range(len(index))]
    return out


def random_direction(width: int, seed: int, device: torch.device) -> Tensor:
    """u: uniform in [0, 1)^width, normalised to length 1 (the paper's control vector before scaling)."""
    u = torch.rand(width, generator=torch.Generator().manual_seed(seed))
    return (u / u.norm()).to(device)


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Train the chosen down-projections until every forget sample meets the stop threshold, or max_steps."""
    family, forget, retain = inputs.family, inputs.forget, inputs.retain
    if cfg.alpha > 0 and (retain is None or len(retain) == 0):
        raise ValueError("rmu with alpha > 0 needs a non-empty retain set; allowed: alpha 0")
    adapter = FFNAdapter.for_model(model)
    layer = steered_layer(adapter, cfg)
    block, params = adapter.block(layer), trained_parameters(model, adapter, layer, cfg.update_layers)
    before = frozen_states(model, inputs, block, forget, family.batch_size)
    length = cfg.steering if cfg.steering is not None else float(torch.cat(before).norm(dim=-1).mean())
    target = length * random_direction(before[0].shape[-1], cfg.seed, before[0].device)
    kept = frozen_states(model, inputs, block, retain, family.batch_size) if cfg.alpha > 0 else []
    forget_order = cycling_batches(len(forget), cfg.batch_size, inputs.seed)
    retain_order = cycling_batches(len(retain), cfg.batch_size, inputs.seed + 1) if cfg.alpha > 0 else None

    def step_loss(_step: int) -> float:
        """Backpropagate the batch's RMU loss (forget misdirection + α · retain preservation); return it."""
        index = next(forget_order)
        loss = (states(model, inputs, block, forget, index) - target).pow(2).mean()
        if retain_order is not None:
            part = next(retain_order)
            now = states(model, inputs, block, retain, part)
            loss = loss + cfg.alpha * F.mse_loss(now, torch.cat([kept[i] for i in part]))
        loss.backward()
        return float(loss.detach())

    progress = optimise(model, step_loss, torch.optim.AdamW(params, lr=cfg.learning_rate), cfg.max_steps,
                        stop_rule(model, inputs))
    return training_report(model, inputs, progress,
                           {"optimizer": "adamw", "learning_rate": cfg.learning_rate, "layer": layer,
                            "trained_layers": list(range(max(0, layer - cfg.update_layers + 1), layer + 1)),
                            "steering": length, "alpha": cfg.alpha},
                           trainable_count=sum(p.numel() for p in params))
