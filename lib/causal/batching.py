"""Token-sequence batches for causal LMs: padding, per-token log-probs, teacher-forced accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Sequences:
    """Token sequences (each with at least 2 tokens) and optional secret spans [start, end) in token indices."""

    ids: tuple[tuple[int, ...], ...]
    spans: tuple[tuple[int, int] | None, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.spans):
            raise ValueError(f"{len(self.ids)} sequences but {len(self.spans)} spans")
        for i, (row, span) in enumerate(zip(self.ids, self.spans)):
            if len(row) < 2:
                raise ValueError(f"sequence {i} has {len(row)} tokens; at least 2 are needed to score a next token")
            if span is not None and not 1 <= span[0] < span[1] <= len(row):
                raise ValueError(f"sequence {i}: span {span} outside 1..{len(row)} (the first token is never scored)")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> "Sequences":
        """The sequences at `index`, in that order."""
        return Sequences(tuple(self.ids[i] for i in index), tuple(self.spans[i] for i in index))


def of(ids: Sequence[Sequence[int]], spans: Sequence[tuple[int, int] | None] | None = None) -> Sequences:
    """Build Sequences from plain lists (no spans when `spans` is None)."""
    return Sequences(tuple(tuple(int(t) for t in row) for row in ids),
                     tuple(spans) if spans is not None else (None,) * len(ids))


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token rows: ids (B, T) and attention mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def batches(n: int, size: int) -> Iterator[list[int]]:
    """Consecutive index batches of at most `size`."""
    if size < 1:
        raise ValueError(f"batch size {size} must be >= 1")
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))


def on_model(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """ids and mask moved to the model's device (batches are built on the CPU)."""
    device = next(model.parameters()).device
    return ids.to(device), mask.to(device)


def logits_of(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Next-token logits (B, T-1, V) for positions 0..T-2 (predicting tokens 1..T-1)."""
    ids, mask = on_model(model, ids, mask)
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1]


def token_nll(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token NLL (B, T-1) of tokens 1..T-1 and their validity mask (B, T-1), differentiable."""
    ids, mask = on_model(model, ids, mask)
    logits = logits_of(model, ids, mask)
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    valid = mask[:, 1:].bool()
    return nll * valid, valid


def sequence_nll(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16) -> Tensor:
    """Mean per-token NLL of each sequence (N,), no gradient."""
    out = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = pad([seqs.ids[i] for i in index], pad_id)
            nll, valid = token_nll(model, ids, mask)
            out.append((nll.sum(1) / valid.sum(1)).cpu())
    return torch.cat(out)


def _span_mask(seqs: Sequences, index: list[int], width: int) -> Tensor:
    """(B, width) mask of the scored positions (token t-1 predicts t) inside each row's span."""
    out = torch.zeros((len(index), width), dtype=torch.bool)
    for r, i in enumerate(index):
        span = seqs.spans[i]
        if span is not None:
            out[r, span[0] - 1 : span[1] - 1] = True
    return out


def accuracy(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16,
             span: bool = False) -> Tensor:
    """Teacher-forced argmax accuracy (MA) per sequence (N,); over the secret span when `span` (NaN if none)."""
    out = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = on_model(model, *pad([seqs.ids[i] for i in index], pad_id))
            hit = (logits_of(model, ids, mask).argmax(-1) == ids[:, 1:]).cpu()  # (B, T-1)
            ids, mask = ids.cpu(), mask.cpu()
            scored = _span_mask(seqs, index, hit.shape[1]) if span else mask[:, 1:].bool()
            out.append((hit & scored).sum(1) / scored.sum(1).clamp(min=1) + torch.where(scored.any(1), 0.0, float("nan")))
    return torch.cat(out)
