"""Sampled extraction: does any of k sampled continuations of a secret's prefix emit the secret?

Greedy decoding can hide what sampling shows (Scholten et al. 2024): an edit that moves the secret from the
top-1 token to the top-5 still lets a sampler emit it. Each prefix is continued n times with temperature and
nucleus (top-p) sampling from a seeded generator; a hit is a continuation that holds the secret's tokens
contiguously. leak@k is the share of secrets emitted at least once in k samples, with the unbiased estimator
1 - C(n - c, k) / C(n, k) of c hits in n samples (Chen et al. 2021's pass@k).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Sequence

import torch
from torch import Tensor, nn

from lib.core.params import Count, Natural, Positive, PositiveFraction, check_ranges


@dataclass(frozen=True)
class SamplingConfig:
    """How the attacker samples: n continuations per prefix of max_new tokens at a temperature and top-p."""

    n_samples: Count = 64
    max_new: Count = 16
    temperature: Positive = 1.0
    top_p: PositiveFraction = 0.95
    batch_size: Count = 64
    seed: Natural = 0

    def __post_init__(self) -> None:
        """Every field within its range."""
        check_ranges(self)


def _contains(row: Sequence[int], needle: Sequence[int]) -> bool:
    """Whether `needle` occurs contiguously in `row`."""
    n = len(needle)
    return any(list(row[i:i + n]) == list(needle) for i in range(len(row) - n + 1))


def _next_token(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator) -> Tensor:
    """One sampled token per row from float32 logits (B, V), with temperature and nucleus filtering."""
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    ordered, index = probs.sort(dim=-1, descending=True)
    keep = ordered.cumsum(-1) - ordered < cfg.top_p  # the smallest prefix of tokens whose mass reaches top_p
    ordered = ordered * keep
    choice = torch.multinomial(ordered.cpu(), 1, generator=generator).to(logits.device)
    return index.gather(-1, choice).squeeze(-1)


def sample(model: nn.Module, prefix: Sequence[int], cfg: SamplingConfig, generator: torch.Generator) -> list[list[int]]:
    """cfg.n_samples sampled continuations of one prefix (token ids), with a KV cache."""
    device = next(model.parameters()).device
    out: list[list[int]] = []
    with torch.no_grad():
        for start in range(0, cfg.n_samples, cfg.batch_size):
            rows = min(cfg.batch_size, cfg.n_samples - start)
            ids = torch.tensor([list(prefix)] * rows, dtype=torch.long, device=device)
            result = model(input_ids=ids, use_cache=True)
            tokens = []
            for _ in range(cfg.max_new):
                token = _next_token(result.logits[:, -1], cfg, generator)
                tokens.append(token)
                result = model(input_ids=token.unsqueeze(-1), past_key_values=result.past_key_values, use_cache=True)
            out += torch.stack(tokens, dim=1).tolist()
    return out


def hits(model: nn.Module, prefixes: Sequence[Sequence[int]], secrets: Sequence[Sequence[int]],
         cfg: SamplingConfig) -> list[int]:
    """Per secret, how many of cfg.n_samples continuations of its prefix hold it."""
    generator = torch.Generator().manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    try:
        return [sum(_contains(row, secret) for row in sample(model, prefix, cfg, generator))
                for prefix, secret in zip(prefixes, secrets, strict=True)]
    finally:
        model.train(was_training)


def leak_at_k(counts: Sequence[int], n: int, ks: Sequence[int]) -> dict[int, float]:
    """leak@k for each k <= n: the mean over secrets of 1 - C(n - c, k) / C(n, k) (c hits of n samples)."""
    if any(k < 1 or k > n for k in ks) or any(c < 0 or c > n for c in counts) or not counts:
        raise ValueError(f"ks={list(ks)}, counts in [0, {n}] required; got {list(counts)[:5]}")
    return {k: sum(1 - comb(n - c, k) / comb(n, k) for c in counts) / len(counts) for k in ks}
