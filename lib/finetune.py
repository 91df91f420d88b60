"""Masked-LM fine-tuning with a seeded, reproducible recipe."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from lib.privacy import logits_at
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe for masked-LM fine-tuning."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_fraction: float
    mask_prob: float
    max_len: int
    seed: int


@dataclass(frozen=True)
class TrainLog:
    """What a fine-tuning run did, for metrics and MLflow."""

    steps: int
    final_loss: float
    epoch_losses: tuple[float, ...]
    seconds: float


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Tokenize each text into chunks of at most max_len tokens, with special tokens."""
    body = max_len - 2
    chunks: list[list[int]] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        for start in range(0, max(len(ids), 1), body):  # long emails become several chunks
            chunks.append([tokenizer.cls_token_id, *ids[start : start + body], tokenizer.sep_token_id])
    return chunks


def mask_tokens(
    input_ids: torch.Tensor, special: torch.Tensor, tokenizer: PreTrainedTokenizerBase, prob: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `prob` of real tokens; 80% [MASK], 10% random, 10% kept."""
    labels = input_ids.clone()
    chosen = (torch.rand(input_ids.shape, generator=gen) < prob) & ~special  # (B, T)
    labels[~chosen] = -100
    inputs = input_ids.clone()
    replace = chosen & (torch.rand(input_ids.shape, generator=gen) < 0.8)
    inputs[replace] = tokenizer.mask_token_id
    randomize = chosen & ~replace & (torch.rand(input_ids.shape, generator=gen) < 0.5)
    inputs[randomize] = torch.randint(len(tokenizer), input_ids.shape, generator=gen)[randomize]
    return inputs, labels


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to the batch's longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, (ids != pad_id).long()


def special_mask(ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """True where a token is special (CLS, SEP, PAD): never masked."""
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    return torch.isin(ids, specials)


def train_masked_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    cfg: TrainConfig,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainLog:
    """Fine-tune `model` in place on `texts` with the MLM objective; returns the loss history."""
    import time

    if not texts:
        raise ValueError("no training texts: the corpus is empty")
    torch.manual_seed(cfg.seed)
    chunks = tokenize_texts(tokenizer, texts, cfg.max_len)
    steps_per_epoch = math.ceil(len(chunks) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(optim, int(cfg.warmup_fraction * total), total)
    gen, order_rng = torch.Generator().manual_seed(cfg.seed), random.Random(cfg.seed)
    model.train()
    start, step, epoch_losses = time.perf_counter(), 0, []
    for epoch in range(cfg.epochs):
        order = list(range(len(chunks)))
        order_rng.shuffle(order)
        losses = []
        for b in range(steps_per_epoch):
            ids, attn = pad_batch([chunks[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]], tokenizer.pad_token_id)
            inputs, labels = mask_tokens(ids, special_mask(ids, tokenizer), tokenizer, cfg.mask_prob, gen)
            rows, positions = (labels != -100).nonzero(as_tuple=True)  # (n,), (n,)
            if rows.numel() == 0:  # nothing masked in this batch: no loss to learn from
                continue
            # the vocabulary head (as costly as the encoder here) runs on masked positions only
            logits = logits_at(model, inputs, attn, rows, positions)  # (n, V)
            loss = torch.nn.functional.cross_entropy(logits, labels[rows, positions])
            loss.backward()
            optim.step(), sched.step(), optim.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, total, loss.item())
        epoch_losses.append(sum(losses) / max(len(losses), 1))
    model.eval()
    return TrainLog(step, epoch_losses[-1], tuple(epoch_losses), time.perf_counter() - start)
