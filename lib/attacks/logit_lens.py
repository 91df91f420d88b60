"""Logit lens: can the forgotten token still be read from an intermediate layer? (Patil et al. 2023 recovered
deleted facts from hidden states projected through the unembedding.)

Every layer's output at a target row's position goes through the final norm and the LM head (the adapter names
both per architecture, as data: FFNSpec.final_norm and head); the gold token's rank among the vocabulary there,
per layer. The last layer's reading is the model's own prediction, so an edit that only suppresses the token at
the output (the last layer) leaves it readable below, and the best rank over layers shows it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.adapter import FFNAdapter, TargetRows


@dataclass(frozen=True)
class LensReport:
    """Per target row: the gold token's rank (0 = top) at each layer, and summaries over rows."""

    ranks: Tensor  # (R, L) int64
    final_top1: float  # share of rows whose token is the last layer's top prediction
    best_top1: float  # share of rows whose token is the top prediction of some layer
    median_best_rank: float


def _rank(logits: Tensor, gold: Tensor) -> Tensor:
    """Rank of each row's gold id in its logits (ties counted in its favour): (R,)."""
    gold_logit = logits.gather(-1, gold[:, None])
    return (logits > gold_logit).sum(-1)


@torch.no_grad()
def layer_ranks(model: nn.Module, rows: TargetRows, batch_size: int = 32) -> LensReport:
    """The gold token's rank at every layer's output, read through the logit lens, for every target row."""
    adapter = FFNAdapter.for_model(model)
    device = next(model.parameters()).device
    outputs: dict[int, Tensor] = {}

    def keep(layer: int):
        """Forward hook storing the layer's output hidden state."""
        def hook(_module: nn.Module, _args: tuple, out: object) -> None:
            outputs[layer] = out[0] if isinstance(out, tuple) else out  # type: ignore[index]
        return hook

    handles = [adapter.block(i).register_forward_hook(keep(i)) for i in range(adapter.n_layers)]
    chunks = []
    try:
        for start in range(0, len(rows), batch_size):
            part = rows.take(slice(start, start + batch_size), device)
            model(input_ids=part.input_ids, attention_mask=part.attention_mask)
            index = torch.arange(len(part), device=device)
            per_layer = [_rank(adapter.lens(outputs[i][index, part.positions]).float(), part.gold_ids)
                         for i in range(adapter.n_layers)]
            chunks.append(torch.stack(per_layer, dim=1).cpu())
    finally:
        for handle in handles:
            handle.remove()
    ranks = torch.cat(chunks) if chunks else torch.zeros(0, adapter.n_layers, dtype=torch.long)
    best = ranks.min(dim=1).values if len(ranks) else torch.zeros(0, dtype=torch.long)
    return LensReport(ranks=ranks, final_top1=float((ranks[:, -1] == 0).float().mean()) if len(ranks) else 0.0,
                      best_top1=float((best == 0).float().mean()) if len(ranks) else 0.0,
                      median_best_rank=float(best.float().median()) if len(ranks) else 0.0)
