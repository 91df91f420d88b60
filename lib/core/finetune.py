"""Fine-tuning with one seeded recipe for both families: AdamW, linear warm-up and decay, shuffled batches.

The family supplies only the loss of a batch of item indices (masked LMs: BERT masking of text
chunks, lib.families.masked.mlm_batch_loss; causal LMs: next-token NLL, lib.families.causal).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import get_linear_schedule_with_warmup

BatchLoss = Callable[[Sequence[int]], Tensor | None]  # item indices -> mean loss (None: nothing to learn)
OnStep = Callable[[int, int, float], None]  # (step, total steps, loss)


@dataclass(frozen=True)
class TrainConfig:
    """AdamW recipe: passes over the items (0 keeps the model), batch size, rate, decay, warm-up share, seed."""

    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_fraction: float = 0.06
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject values the optimisation cannot use."""
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"epochs={self.epochs} (>= 0), batch_size={self.batch_size} (>= 1), learning_rate="
                             f"{self.learning_rate} (> 0) and weight_decay={self.weight_decay} (>= 0) out of range")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must lie in [0, 1]")


@dataclass(frozen=True)
class MlmConfig(TrainConfig):
    """The masked-LM recipe: the common one plus BERT's masking probability and the text-chunk length."""

    mask_prob: float = 0.15
    max_len: int = 128

    def __post_init__(self) -> None:
        """Reject values the masking cannot use."""
        super().__post_init__()
        if not 0.0 < self.mask_prob < 1.0 or self.max_len < 3:
            raise ValueError(f"mask_prob={self.mask_prob} (allowed (0, 1)) or max_len={self.max_len} (>= 3) invalid")


@dataclass(frozen=True)
class FinetuneConfig(MlmConfig):
    """The masked-LM track's `finetune` section: the model to fine-tune and its MLM recipe."""

    model: str = "embedded:minilm"  # a hub name (bert-base-uncased) or a local checkpoint folder also work


@dataclass(frozen=True)
class TrainLog:
    """Optimizer steps, mean loss per epoch, seconds."""

    steps: int
    epoch_losses: tuple[float, ...]
    seconds: float

    @property
    def final_loss(self) -> float:
        """Mean loss of the last epoch (nan when nothing was trained)."""
        return self.epoch_losses[-1] if self.epoch_losses else math.nan

    def metrics(self, samples: int) -> dict[str, Any]:
        """The stage metrics of a fine-tuning run on `samples` training items."""
        return {"samples": samples, "steps": self.steps, "seconds": round(self.seconds, 1),
                "epoch_losses": [round(x, 4) for x in self.epoch_losses]}


def train(model: nn.Module, n_items: int, batch_loss: BatchLoss, cfg: TrainConfig,
          on_step: OnStep | None = None, autocast: torch.dtype | None = None) -> TrainLog:
    """Fine-tune `model` in place: cfg.epochs seeded passes over `n_items` items in batches of cfg.batch_size.

    `autocast` (bfloat16 / float16) runs each forward under torch.autocast on the model's device while the
    weights and the optimizer state stay as they are (float32 master weights); float16 scales the loss.
    """
    if cfg.epochs and not n_items:
        raise ValueError("no training items: the training text is empty")
    torch.manual_seed(cfg.seed)
    per_epoch = math.ceil(n_items / cfg.batch_size)
    total = per_epoch * cfg.epochs
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), max(total, 1))
    order_rng, start, step, epoch_losses = random.Random(cfg.seed), time.perf_counter(), 0, []
    device = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device, enabled=autocast == torch.float16)  # float16 gradients underflow unscaled
    model.train()
    for _ in range(cfg.epochs):
        order, losses = list(range(n_items)), []
        order_rng.shuffle(order)
        for b in range(per_epoch):
            with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
                loss = batch_loss(order[b * cfg.batch_size: (b + 1) * cfg.batch_size])
            if loss is None:  # e.g. nothing masked in this batch: no loss to learn from
                continue
            scaler.scale(loss.float()).backward()
            scaler.step(optim), scaler.update(), sched.step(), optim.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, total, loss.item())
        epoch_losses.append(sum(losses) / max(len(losses), 1))
    model.eval()
    return TrainLog(step, tuple(epoch_losses), time.perf_counter() - start)
