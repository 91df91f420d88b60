"""Quantization: does rounding the weights to 8 or 4 bits undo an edit? (Zhang et al. 2024: 4-bit quantization
restored much of what unlearning removed, because the edits were smaller than the quantization step.)

Round-to-nearest weight-only quantization, symmetric, per group of `group_size` consecutive input weights
of one output unit (the scheme of weight-only int8 / int4 kernels): scale = max |w| / (2^(bits-1) - 1) per
group, w_q = scale * round(w / scale). It is applied to every 2-D weight inside the transformer layers
(attention and FFN projections, every FFN weight a method edits), along the input axis the adapter names
(GPT-2's Conv1D is transposed); embeddings and the LM head stay in float, as in weight-only quantization.
Rounding is simulated in float32 on the model's device, so every architecture and device is covered.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter


@dataclass(frozen=True)
class QuantReport:
    """What quantization did: the weights it rounded and the median quantization step."""

    bits: int
    group_size: int
    tensors: int
    weights: int
    median_step: float


def _groups(weight: Tensor, group_size: int, input_axis: int) -> tuple[Tensor, int]:
    """The weight in float32 as (out, groups, group_size): consecutive inputs of one output unit, zero-padded; and
    the number of inputs."""
    w = weight.detach().float()
    w = w.T if input_axis == 0 else w  # (out, in)
    out_dim, in_dim = w.shape
    return nn.functional.pad(w, (0, (-in_dim) % group_size)).reshape(out_dim, -1, group_size), in_dim


def _levels(groups: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Each weight's integer level and each group's scale (out, groups, 1) of round-to-nearest symmetric rounding."""
    qmax = 2 ** (bits - 1) - 1
    scale = groups.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    return torch.round(groups / scale).clamp(-qmax, qmax), scale


def _ungroup(groups: Tensor, in_dim: int, input_axis: int) -> Tensor:
    """The weight's layout back from its groups."""
    flat = groups.reshape(groups.shape[0], -1)[:, :in_dim]
    return flat.T if input_axis == 0 else flat


def _check(bits: int, group_size: int) -> None:
    """ValueError unless bits >= 2 and group_size >= 1."""
    if bits < 2 or group_size < 1:
        raise ValueError(f"bits={bits}, group_size={group_size} invalid; allowed: bits >= 2, group_size >= 1")


def fake_quantize(weight: Tensor, bits: int, group_size: int, input_axis: int) -> tuple[Tensor, Tensor]:
    """(rounded weight in the weight's dtype, step per weight) of round-to-nearest symmetric quantization."""
    _check(bits, group_size)
    groups, in_dim = _groups(weight, group_size, input_axis)
    levels, scale = _levels(groups, bits)
    rounded = _ungroup(levels * scale, in_dim, input_axis)
    step = _ungroup(scale.expand_as(groups), in_dim, input_axis)
    return rounded.to(weight.dtype).contiguous(), step.contiguous()


def lower_median(values: Tensor, counts: Tensor) -> float:
    """torch.median (the lower median) of the values each repeated counts times, without repeating them."""
    order = values.argsort()
    ends = counts[order].cumsum(0)
    return float(values[order][torch.searchsorted(ends, (int(ends[-1]) - 1) // 2, right=True)])


def layer_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every 2-D weight inside the transformer layers, by parameter name."""
    adapter = FFNAdapter.for_model(model)
    blocks = {id(adapter.block(i)) for i in range(adapter.n_layers)}
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for _, module in model.named_modules():
        if id(module) in blocks:
            out.update({names[id(p)]: p for p in module.parameters() if p.dim() == 2})
    return out


def quantize(model: nn.Module, bits: int, group_size: int = 32) -> tuple[nn.Module, QuantReport]:
    """A copy of the model with its layer weights rounded to `bits`, and what was rounded."""
    _check(bits, group_size)
    quantized = copy.deepcopy(model)
    axis = FFNAdapter.for_model(quantized).spec.neuron_axis
    scales, counts, count = [], [], 0
    with torch.no_grad():
        for p in layer_weights(quantized).values():
            groups, in_dim = _groups(p, group_size, axis)
            levels, scale = _levels(groups, bits)
            p.copy_(_ungroup(levels * scale, in_dim, axis).to(p.dtype))
            # a group's step is every one of its weights' step: the last group holds the inputs left over
            sizes = torch.full(scale.shape[:2], group_size, dtype=torch.long, device=scale.device)
            sizes[:, -1] = in_dim - group_size * (scale.shape[1] - 1)
            scales.append(scale.flatten())
            counts.append(sizes.flatten())
            count += p.numel()
    median = lower_median(torch.cat(scales), torch.cat(counts)) if scales else 0.0
    return quantized, QuantReport(bits, group_size, len(scales), count, median)


def edit_vs_step(parent: nn.Module, edited: nn.Module, bits: int, group_size: int = 32) -> dict[str, float]:
    """How an edit compares with the quantization step: over the layer weights it changed, the median |delta| /
    step, and the share of changed weights that round to the parent's integer level (edit undone by rounding)."""
    _check(bits, group_size)
    axis = FFNAdapter.for_model(parent).spec.neuron_axis
    before, after = layer_weights(parent), layer_weights(edited)
    ratios, undone, changed_total = [], 0, 0
    for name, old in before.items():
        old_groups, _ = _groups(old, group_size, axis)
        new_groups, _ = _groups(after[name], group_size, axis)
        changed = old_groups != new_groups  # the zero padding never differs
        n_changed = int(changed.sum())
        if not n_changed:
            continue
        old_levels, old_scale = _levels(old_groups, bits)
        new_levels, _ = _levels(new_groups, bits)
        ratios.append(((new_groups - old_groups).abs() / old_scale)[changed])
        # undone: the same integer level as the parent's weight (an edit that moves its group's largest weight
        # rescales the group, so the rounded values differ in the last bits while the levels are the same)
        undone += int((old_levels == new_levels)[changed].sum())
        changed_total += n_changed
    if not ratios:
        return {"changed_weights": 0, "median_delta_over_step": 0.0, "undone_fraction": 0.0}
    return {"changed_weights": changed_total, "median_delta_over_step": float(torch.cat(ratios).median()),
            "undone_fraction": undone / changed_total}
