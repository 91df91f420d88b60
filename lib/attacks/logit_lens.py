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


def longest_rows(rows: TargetRows) -> tuple[Tensor, Tensor]:
    """For rows that are prefixes of one text per sample (a causal family's target rows): the longest row of each
    sample, and per row the index of its sample's longest among them. ValueError when a row is no such prefix."""
    lengths = rows.attention_mask.sum(1)
    samples = rows.sample.unique()
    longest = torch.stack([torch.nonzero(rows.sample == s).flatten()[lengths[rows.sample == s].argmax()]
                           for s in samples])
    owner = torch.searchsorted(samples, rows.sample)
    cover = rows.input_ids[longest[owner]]
    inside = torch.arange(rows.input_ids.shape[1])[None, :] < lengths[:, None]
    if not bool(((cover == rows.input_ids) | ~inside).all()):
        raise ValueError("target rows of one sample are not prefixes of one text; allowed: causal target rows")
    return longest, owner


@torch.no_grad()
def layer_ranks(model: nn.Module, rows: TargetRows, batch_size: int = 32, prefixes: bool = False) -> LensReport:
    """The gold token's rank at every layer's output, read through the logit lens, for every target row.

    prefixes: the rows of each sample are prefixes of one text read by a causal LM, whose state at a position does
    not see what follows; one forward of each sample's longest row then serves all its rows (a secret of five tokens
    is five rows)."""
    adapter = FFNAdapter.for_model(model)
    device = next(model.parameters()).device
    read, owner = longest_rows(rows) if prefixes and len(rows) else (torch.arange(len(rows)), torch.arange(len(rows)))
    outputs: dict[int, Tensor] = {}

    def keep(layer: int):
        """Forward hook storing the layer's output hidden state."""
        def hook(_module: nn.Module, _args: tuple, out: object) -> None:
            outputs[layer] = out[0] if isinstance(out, tuple) else out  # type: ignore[index]
        return hook

    handles = [adapter.block(i).register_forward_hook(keep(i)) for i in range(adapter.n_layers)]
    chunks = []
    try:
        for start in range(0, len(read), batch_size):
            forward = rows.take(read[start:start + batch_size], device)
            model(input_ids=forward.input_ids, attention_mask=forward.attention_mask)
            mine = torch.nonzero((owner >= start) & (owner < start + batch_size)).flatten()
            part = rows.take(mine, device)
            index = (owner[mine] - start).to(device)
            per_layer = [_rank(adapter.lens(outputs[i][index, part.positions]).float(), part.gold_ids)
                         for i in range(adapter.n_layers)]
            chunks.append((mine, torch.stack(per_layer, dim=1).cpu()))
    finally:
        for handle in handles:
            handle.remove()
    ranks = torch.zeros(len(rows), adapter.n_layers, dtype=torch.long)
    for mine, part_ranks in chunks:
        ranks[mine] = part_ranks
    best = ranks.min(dim=1).values if len(ranks) else torch.zeros(0, dtype=torch.long)
    return LensReport(ranks=ranks, final_top1=float((ranks[:, -1] == 0).float().mean()) if len(ranks) else 0.0,
                      best_top1=float((best == 0).float().mean()) if len(ranks) else 0.0,
                      median_best_rank=float(best.float().median()) if len(ranks) else 0.0)
