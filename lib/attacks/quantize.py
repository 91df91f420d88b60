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


def fake_quantize(weight: Tensor, bits: int, group_size: int, input_axis: int) -> tuple[Tensor, Tensor]:
    """(rounded weight in the weight's dtype, step per weight) of round-to-nearest symmetric quantization."""
    if bits < 2 or group_size < 1:
        raise ValueError(f"bits={bits}, group_size={group_size} invalid; allowed: bits >= 2, group_size >= 1")
    w = weight.detach().float()
    w = w.T if input_axis == 0 else w  # (out, in)
    out_dim, in_dim = w.shape
    pad = (-in_dim) % group_size
    groups = nn.functional.pad(w, (0, pad)).reshape(out_dim, -1, group_size)
    qmax = 2 ** (bits - 1) - 1
    scale = groups.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    rounded = (torch.round(groups / scale).clamp(-qmax, qmax) * scale).reshape(out_dim, -1)[:, :in_dim]
    step = scale.expand_as(groups).reshape(out_dim, -1)[:, :in_dim]
    if input_axis == 0:
        rounded, step = rounded.T, step.T
    return rounded.to(weight.dtype).contiguous(), step.contiguous()


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
    quantized = copy.deepcopy(model)
    axis = FFNAdapter.for_model(quantized).spec.neuron_axis
    steps, count = [], 0
    with torch.no_grad():
        for p in layer_weights(quantized).values():
            rounded, step = fake_quantize(p, bits, group_size, axis)
            p.copy_(rounded)
            steps.append(step.flatten())
            count += p.numel()
    median = float(torch.cat(steps).median()) if steps else 0.0
    return quantized, QuantReport(bits, group_size, len(steps), count, median)


def edit_vs_step(parent: nn.Module, edited: nn.Module, bits: int, group_size: int = 32) -> dict[str, float]:
    """How an edit compares with the quantization step: over the layer weights it changed, the median |delta| /
    step, and the share of changed weights that round to the parent's integer level (edit undone by rounding)."""
    axis = FFNAdapter.for_model(parent).spec.neuron_axis
    before, after = layer_weights(parent), layer_weights(edited)
    ratios, undone = [], []
    for name, old in before.items():
        new = after[name].detach()
        changed = old.detach() != new
        if not bool(changed.any()):
            continue
        q_old, step = fake_quantize(old, bits, group_size, axis)
        q_new, step_new = fake_quantize(new, bits, group_size, axis)
        delta = (new.float() - old.detach().float()).abs()
        ratios.append((delta / step)[changed])
        # undone: the same integer level as the parent's weight (an edit that moves its group's largest weight
        # rescales the group, so the rounded values differ in the last bits while the levels are the same)
        same_level = torch.round(q_old.float() / step) == torch.round(q_new.float() / step_new)
        undone.append(same_level[changed].float())
    if not ratios:
        return {"changed_weights": 0, "median_delta_over_step": 0.0, "undone_fraction": 0.0}
    ratio, undone_all = torch.cat(ratios), torch.cat(undone)
    return {"changed_weights": int(ratio.numel()), "median_delta_over_step": float(ratio.median()),
            "undone_fraction": float(undone_all.mean())}
