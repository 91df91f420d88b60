"""Causal-LM fine-tuning (next-token loss on every token) with a seeded recipe."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from lib.causal.batching import Sequences, pad, token_nll


@dataclass(frozen=True)
class CausalTrainConfig:
    """AdamW recipe; epochs = passes over the (copy-expanded) training sequences; 0 keeps the model."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_fraction: float
    seed: int

    def __post_init__(self) -> None:
        """Reject values the optimisation cannot use."""
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(f"epochs={self.epochs} (>= 0), batch_size={self.batch_size} (>= 1) and "
                             f"learning_rate={self.learning_rate} (> 0) out of range")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must lie in [0, 1]")


@dataclass(frozen=True)
class CausalTrainLog:
    """Steps, mean loss per epoch, seconds."""

    steps: int
    epoch_losses: tuple[float, ...]
    seconds: float


def train_causal_lm(model: nn.Module, seqs: Sequences, pad_id: int, cfg: CausalTrainConfig,
                    on_step: Callable[[int, int, float], None] | None = None) -> CausalTrainLog:
    """Fine-tune `model` in place on `seqs` (mean token NLL per batch); returns the loss history."""
    if cfg.epochs and not len(seqs):
        raise ValueError("no training sequences: the corpus is empty")
    torch.manual_seed(cfg.seed)
    per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), max(total, 1))
    order_rng, start, step, epoch_losses = random.Random(cfg.seed), time.perf_counter(), 0, []
    model.train()
    for _ in range(cfg.epochs):
        order, losses = list(range(len(seqs))), []
        order_rng.shuffle(order)
        for b in range(per_epoch):
            ids, mask = pad([seqs.ids[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]], pad_id)
            nll, valid = token_nll(model, ids, mask)
            loss = nll.sum() / valid.sum()
            loss.backward()
            optim.step(), sched.step(), optim.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, total, loss.item())
        epoch_losses.append(sum(losses) / len(losses))
    model.eval()
    return CausalTrainLog(step, tuple(epoch_losses), time.perf_counter() - start)


def expand_copies(seqs: Sequences, copies: list[int]) -> Sequences:
    """Repeat each sequence as many times as it occurs in the training text."""
    if len(copies) != len(seqs) or min(copies, default=1) < 1:
        raise ValueError(f"copies must give one count >= 1 per sequence; got {len(copies)} for {len(seqs)}")
    return seqs.subset([i for i, c in enumerate(copies) for _ in range(c)])
