"""FFN-neuron activations and Gradient x Activation attribution (SNKU Eq. 2-4).

`positions[b]` is the sequence index whose logits are scored for row b:
- masked LMs: the [MASK] position (the gold token is the masked-out token);
- causal LMs: the position BEFORE the gold token, i.e. the one whose next-token
  logits predict it (for a gold token at index t, pass t - 1).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter
from lib.core.params import Count, check_ranges


@dataclass(frozen=True)
class AttributionConfig:
    """The `attribution` section: rows per cached Prefect task (one forward and one backward each)."""

    shard_size: Count = 32

    def __post_init__(self) -> None:
        """A positive shard size."""
        check_ranges(self)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily set requires_grad=False on all parameters; restore the flags after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _check_inputs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, positions: Tensor
) -> None:
    """Validate model mode and the shapes/ranges of input_ids, attention_mask and positions."""
    if model.training:
        raise ValueError("model is in training mode (dropout); allowed: eval mode (model.eval())")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids shape {tuple(input_ids.shape)} invalid; expected (B, T)")
    batch, length = input_ids.shape
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(batch, length)}"
        )
    if positions.dim() != 1 or positions.numel() != batch or positions.is_floating_point():
        raise ValueError(
            f"positions shape {tuple(positions.shape)} invalid; expected integer ({batch},)"
        )
    bad = (positions < 0) | (positions >= length)
    if bool(bad.any()):
        raise ValueError(f"positions {positions[bad].tolist()} out of range; allowed: 0..{length - 1}")
    if attention_mask is not None:
        scored = attention_mask[torch.arange(batch), positions.to(attention_mask.device)]  # (B,)
        if bool((scored == 0).any()):
            raise ValueError(
                f"positions {positions[scored.cpu() == 0].tolist()} point at padding "
                "(attention_mask == 0); allowed: attended tokens"
            )


def _logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Plain forward returning logits (B, T, V); no KV cache is built."""
    kwargs = {"use_cache": False} if getattr(model.config, "use_cache", False) else {}
    return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits


def ffn_activations(
    model: nn.Module,
    adapter: FFNAdapter,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    positions: Tensor,
) -> Tensor:
    """No-grad FFN activations of every layer at each row's position: (B, L, d_ff) float32."""
    _check_inputs(model, input_ids, attention_mask, positions)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    pos = positions.to(input_ids.device)
    store: dict[int, Tensor] = {}

    def record(layer: int, x: Tensor) -> Tensor:
        """Keep only the scored position, so memory stays (B, d_ff) per layer."""
        store[layer] = x[rows, pos].float()  # (B, d_ff)
        return x

    with torch.no_grad(), adapter.patch(record):
        _logits(model, input_ids, attention_mask)
    return torch.stack([store[layer] for layer in range(adapter.n_layers)], dim=1)  # (B, L, d_ff)


def grad_x_act_rows(
    model: nn.Module,
    adapter: FFNAdapter,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    positions: Tensor,
    gold_ids: Tensor,
) -> Tensor:
    """Per-row gradient x activation of the gold-token logit: (B, L, d_ff) float32.

    One forward and one backward for the whole batch: rows do not interact, so the
    gradient of the summed objective w.r.t. row b's activations is row b's own gradient.
    """
    _check_inputs(model, input_ids, attention_mask, positions)
    if gold_ids.shape != positions.shape or gold_ids.is_floating_point():
        raise ValueError(
            f"gold_ids shape {tuple(gold_ids.shape)} invalid; expected integer {tuple(positions.shape)}"
        )
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    pos, gold = positions.to(input_ids.device), gold_ids.to(input_ids.device)
    with frozen_parameters(model), torch.enable_grad(), adapter.capture(detach=False) as acts:
        logits = _logits(model, input_ids, attention_mask)  # (B, T, V)
        if bool(((gold < 0) | (gold >= logits.shape[-1])).any()):
            raise ValueError(f"gold_ids {gold.tolist()} out of range; allowed: 0..{logits.shape[-1] - 1}")
        objective = logits[rows, pos, gold].sum()
        layers = list(range(adapter.n_layers))
        grads = torch.autograd.grad(objective, [acts[layer] for layer in layers])
    scores = [  # each (B, d_ff): gradient times activation at the row's scored position
        grad[rows, pos].float() * acts[layer].detach()[rows, pos].float()
        for layer, grad in zip(layers, grads)
    ]
    return torch.stack(scores, dim=1)  # (B, L, d_ff)


def grad_x_act(
    model: nn.Module,
    adapter: FFNAdapter,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    positions: Tensor,
    gold_ids: Tensor,
) -> Tensor:
    """Gradient x activation summed over the batch rows: (L, d_ff) float32."""
    return grad_x_act_rows(model, adapter, input_ids, attention_mask, positions, gold_ids).sum(dim=0)
