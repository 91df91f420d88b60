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
from lib.families.memorization import _forward_kwargs, _left_pad


@dataclass(frozen=True)
class SamplingConfig:
    """How the attacker samples: n continuations per prefix of max_new tokens at a temperature and top-p."""

    n_samples: Count = 64
    max_new: Count = 16
    temperature: Positive = 1.0
    top_p: PositiveFraction = 0.95
    batch_size: Count = 64  # rows per forward, across prefixes
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


def continue_rows(model: nn.Module, rows: Sequence[Sequence[int]], copies: Sequence[int], cfg: SamplingConfig,
                  generator: torch.Generator) -> list[list[int]]:
    """cfg.max_new sampled tokens for each of copies[i] continuations of each row (token ids), all in one left-padded
    batch with a KV cache: positions count real tokens only, so a row reads as it would alone. Each row is read once
    and its cache copied to its continuations: the prompt is most of the tokens a forward reads."""
    # the greedy decoder's padding (pad id 0: never read) and its prefill that projects the last position only
    ids, mask, position = _left_pad(rows, 0, next(model.parameters()).device)
    index = torch.repeat_interleave(torch.arange(len(rows), device=ids.device),
                                    torch.tensor(list(copies), device=ids.device))
    tokens: list[Tensor] = []
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True,
                       **_forward_kwargs(model))
        logits, past = result.logits[index, -1], result.past_key_values
        past.reorder_cache(index)  # beam search's own batch reindexing, any cache class
        mask, position = mask[index], position[index]
        while True:
            tokens.append(_next_token(logits, cfg, generator))
            if len(tokens) == cfg.max_new:  # no forward for a token nobody reads
                break
            mask = torch.cat([mask, mask.new_ones(len(index), 1)], dim=1)
            position = position[:, -1:] + 1
            result = model(input_ids=tokens[-1].unsqueeze(-1), attention_mask=mask, position_ids=position,
                           past_key_values=past, use_cache=True)
            logits, past = result.logits[:, -1], result.past_key_values
    return torch.stack(tokens, dim=1).tolist()


def row_groups(n_prefixes: int, n_samples: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The batches of hits' n_samples rows per prefix, prefix after prefix, batch_size rows each: per batch, its
    (prefix, rows) runs (a prefix's rows may span two batches)."""
    out: list[list[tuple[int, int]]] = []
    for start in range(0, n_prefixes * n_samples, batch_size):
        stop = min(start + batch_size, n_prefixes * n_samples)
        firsts = range(start // n_samples, (stop - 1) // n_samples + 1)
        out.append([(p, min(stop, (p + 1) * n_samples) - max(start, p * n_samples)) for p in firsts])
    return out


def hits(model: nn.Module, prefixes: Sequence[Sequence[int]], secrets: Sequence[Sequence[int]],
         cfg: SamplingConfig) -> list[int]:
    """Per secret, how many of cfg.n_samples continuations of its prefix hold it; the n_samples rows of every
    prefix are sampled cfg.batch_size rows at a time (prefixes of unequal length share a batch)."""
    if len(prefixes) != len(secrets):
        raise ValueError(f"{len(prefixes)} prefixes for {len(secrets)} secrets; allowed: one prefix per secret")
    generator = torch.Generator().manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    try:
        sampled = [out for group in row_groups(len(prefixes), cfg.n_samples, cfg.batch_size)
                   for out in continue_rows(model, [prefixes[p] for p, _ in group], [n for _, n in group], cfg,
                                            generator)]
    finally:
        model.train(was_training)
    return [sum(_contains(row, secret) for row in sampled[i * cfg.n_samples:(i + 1) * cfg.n_samples])
            for i, secret in enumerate(secrets)]


def leak_at_k(counts: Sequence[int], n: int, ks: Sequence[int]) -> dict[int, float]:
    """leak@k for each k <= n: the mean over secrets of 1 - C(n - c, k) / C(n, k) (c hits of n samples)."""
    if any(k < 1 or k > n for k in ks) or any(c < 0 or c > n for c in counts) or not counts:
        raise ValueError(f"ks={list(ks)}, counts in [0, {n}] required; got {list(counts)[:5]}")
    return {k: sum(1 - comb(n - c, k) / comb(n, k) for c in counts) / len(counts) for k in ks}
