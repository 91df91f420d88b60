"""Fine-tuning with one seeded recipe for both families: AdamW, linear warm-up and decay, shuffled batches.

The family supplies only the loss of a batch of item indices (masked LMs: BERT masking of text
chunks, lib.families.masked.mlm_batch_loss; causal LMs: next-token NLL, lib.families.causal).

Data-parallel: when this process is one rank of a torch.distributed group (launched by torchrun; tasks/parallel.py),
every rank walks the same seeded order, takes its share of each batch (items rank, rank + world, ...), and the
gradients are averaged over the ranks before every optimizer step (one flattened all-reduce: DDP's arithmetic),
so all ranks keep identical weights and the run equals one process's within float tolerance.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from transformers import get_linear_schedule_with_warmup

from lib.core.params import Count, Fraction, Natural, NonEmpty, NonNegative, OpenFraction, Positive, check_ranges

BatchLoss = Callable[[Sequence[int]], Tensor | None]  # item indices -> mean loss (None: nothing to learn)
OnStep = Callable[[int, int, float], None]  # (step, total steps, loss)


@dataclass(frozen=True)
class TrainConfig:
    """AdamW recipe: passes over the items (0 keeps the model), batch size, rate, decay, warm-up share, seed."""

    epochs: Natural = 1
    batch_size: Count = 8
    learning_rate: Positive = 5e-5
    weight_decay: NonNegative = 0.0
    warmup_fraction: Fraction = 0.06
    seed: Natural = 0

    def __post_init__(self) -> None:
        """Reject values the optimisation cannot use (a subclass's fields included)."""
        check_ranges(self)


@dataclass(frozen=True)
class MlmConfig(TrainConfig):
    """The masked-LM recipe: the common one plus BERT's masking probability and the text-chunk length."""

    mask_prob: OpenFraction = 0.15
    max_len: Count = 128

    def __post_init__(self) -> None:
        """Reject values the masking cannot use."""
        super().__post_init__()
        if self.max_len < 3:  # [CLS], one token, [SEP]
            raise ValueError(f"max_len={self.max_len} invalid; allowed: an integer >= 3")


@dataclass(frozen=True)
class FinetuneConfig(MlmConfig):
    """The masked-LM track's `finetune` section: the model to fine-tune and its MLM recipe."""

    model: NonEmpty = "embedded:minilm"  # a hub name (bert-base-uncased) or a local checkpoint folder also work


@dataclass(frozen=True)
class TrainLog:
    """Optimizer steps, mean loss per epoch, seconds."""

    steps: int
    epoch_losses: tuple[float, ...]
    seconds: float
    ranks: int = 1  # data-parallel processes that trained (1: this one alone)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last epoch (nan when nothing was trained)."""
        return self.epoch_losses[-1] if self.epoch_losses else math.nan

    def metrics(self, samples: int) -> dict[str, Any]:
        """The stage metrics of a fine-tuning run on `samples` training items."""
        return {"samples": samples, "steps": self.steps, "seconds": round(self.seconds, 1),
                "epoch_losses": [round(x, 4) for x in self.epoch_losses], "ranks": self.ranks}


def data_parallel() -> tuple[int, int]:
    """(rank, world size) of this process in torch.distributed's default group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(params: Sequence[nn.Parameter], world: int) -> bool:
    """Average the gradients over the ranks (zeros stand in where only other ranks have one); False if none has."""
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)  # a rank whose share had nothing to learn still joins the sum
    used = [p for p, h in zip(params, has.tolist()) if h]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return False
    grads = [p.grad for p in used]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    for grad, mean in zip(grads, _unflatten_dense_tensors(flat.div_(world), grads)):
        grad.copy_(mean)
    return True


def mean_over_ranks(value: float, count: int, world: int, device: torch.device) -> float:
    """Mean of a per-rank value weighted by `count` over all ranks (the loss logged for a data-parallel step)."""
    if world == 1:
        return value
    pair = torch.tensor([value * count, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(pair)
    return float(pair[0] / pair[1]) if pair[1] else math.nan


def _step_loss(batch_loss: BatchLoss, batch: list[int], rank: int, world: int, device: str,
               autocast: torch.dtype | None) -> tuple[Tensor | None, int]:
    """This rank's mean loss on its share of `batch` (None: nothing to learn) and the share's size."""
    share = batch[rank::world]
    if not share:
        return None, 0
    with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
        return batch_loss(share), len(share)


def train(model: nn.Module, n_items: int, batch_loss: BatchLoss, cfg: TrainConfig,
          on_step: OnStep | None = None, autocast: torch.dtype | None = None) -> TrainLog:
    """Fine-tune `model` in place: cfg.epochs seeded passes over `n_items` items in batches of cfg.batch_size.

    `autocast` (bfloat16 / float16) runs each forward under torch.autocast on the model's device while the
    weights and the optimizer state stay as they are (float32 master weights); float16 scales the loss.
    Inside a torch.distributed group each rank trains on its share of every batch (module docstring).
    """
    if cfg.epochs and not n_items:
        raise ValueError("no training items: the training text is empty")
    torch.manual_seed(cfg.seed)
    rank, world = data_parallel()
    per_epoch = math.ceil(n_items / cfg.batch_size)
    total = per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), max(total, 1))
    order_rng, start, step, epoch_losses = random.Random(cfg.seed), time.perf_counter(), 0, []
    device = params[0].device
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)  # float16 gradients underflow
    model.train()
    for _ in range(cfg.epochs):
        order, losses = list(range(n_items)), []
        order_rng.shuffle(order)
        for b in range(per_epoch):
            batch = order[b * cfg.batch_size: (b + 1) * cfg.batch_size]
            loss, items = _step_loss(batch_loss, batch, rank, world, device.type, autocast)
            if loss is not None:
                # a per-item mean weighted by this rank's share: the ranks' average gradient is the batch's
                scaled = loss.float() * (world * items / len(batch)) if world > 1 else loss.float()
                scaler.scale(scaled).backward()
            learned = average_gradients(params, world) if world > 1 else loss is not None
            if not learned:  # e.g. nothing masked in this batch: no loss to learn from
                continue
            scaler.step(optim), scaler.update(), sched.step(), optim.zero_grad(set_to_none=True)
            step += 1
            value, weight = (loss.item(), items) if loss is not None else (0.0, 0)
            losses.append(mean_over_ranks(value, weight, world, device))
            if on_step:
                on_step(step, total, losses[-1])
        epoch_losses.append(sum(losses) / max(len(losses), 1))
    model.eval()
    return TrainLog(step, tuple(epoch_losses), time.perf_counter() - start, world)
