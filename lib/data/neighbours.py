"""Neighbour samples for NeuMuter: a masked LM that never saw the forget set rewrites tokens one at a time.

Each chosen position (a seeded random `ratio` of the wordpieces, visited in random order) is masked
alone in the current text and replaced by the MLM's most likely token other than the one already
there, so every chosen token really changes (the public code's plain argmax may keep it). All
texts of a batch advance together: step j masks each text's j-th chosen position.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from lib.core.finetune import MlmConfig
from lib.core.params import Count, Natural, NonEmpty, Positive, PositiveFraction, check_ranges
from lib.families.causal import pad


@dataclass(frozen=True)
class NeighbourConfig:
    """NeuMuter's neighbours (`causal.neighbours`, `benchmarks.neighbours`): an MLM that never saw the forget
    set, fine-tuned on the training text minus D_f, rewrites each forget sample K times."""

    mlm: NonEmpty = "embedded:minilm"
    k: Count = 1  # neighbours per forget sample (paper: 5)
    ratio: PositiveFraction = 1.0  # the paper's r: share of wordpieces rewritten, one at a time
    seed: Natural = 0
    mlm_epochs: Natural = 2  # 0 keeps the pre-trained MLM (MlmConfig's epochs)
    mlm_batch_size: Count = 8
    mlm_learning_rate: Positive = 5e-4

    def __post_init__(self) -> None:
        """At least one neighbour; a ratio in (0, 1]; the MLM recipe's ranges."""
        check_ranges(self)

    def mlm_config(self, max_len: int) -> MlmConfig:
        """The MLM's fine-tuning recipe (AdamW, 6 % warm-up, BERT masking of 15 %), on texts cut at `max_len`."""
        return MlmConfig(epochs=self.mlm_epochs, batch_size=self.mlm_batch_size, learning_rate=self.mlm_learning_rate,
                         weight_decay=0.0, warmup_fraction=0.06, seed=self.seed, mask_prob=0.15, max_len=max_len)


def _plan(lengths: Sequence[int], ratio: float, rng: random.Random) -> list[list[int]]:
    """Per text, the wordpiece positions (1..n, after [CLS]) to rewrite, in visiting order."""
    plans = []
    for n in lengths:
        count = max(1, round(ratio * n))
        plans.append(rng.sample(range(1, n + 1), min(count, n)))
    return plans


def _step(mlm: nn.Module, ids: Tensor, attn: Tensor, targets: list[tuple[int, int]], mask_id: int,
          banned: Tensor) -> None:
    """Rewrite one position per listed (row, position) in place with the best different token."""
    rows = torch.tensor([r for r, _ in targets])
    cols = torch.tensor([c for _, c in targets])
    masked = ids.clone()
    masked[rows, cols] = mask_id
    with torch.no_grad():
        logits = mlm(input_ids=masked[rows], attention_mask=attn[rows]).logits[torch.arange(len(rows)), cols]
    logits[:, banned] = float("-inf")
    logits[torch.arange(len(rows)), ids[rows, cols]] = float("-inf")  # force a change
    ids[rows, cols] = logits.argmax(-1)


def rewrite(mlm: nn.Module, tokenizer: Any, texts: Sequence[str], ratio: float, seed: int,
            max_len: int = 128) -> list[str]:
    """One neighbour per text: `ratio` of its wordpieces rewritten one at a time by the MLM."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio={ratio}; allowed range (0, 1]")
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_len - 2] for t in texts]
    if any(not p for p in pieces):
        raise ValueError("a text has no wordpieces to rewrite")
    rows = [[tokenizer.cls_token_id, *p, tokenizer.sep_token_id] for p in pieces]
    ids, attn = pad(rows, tokenizer.pad_token_id)
    plans = _plan([len(p) for p in pieces], ratio, random.Random(seed))
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    for j in range(max(len(p) for p in plans)):
        targets = [(r, plan[j]) for r, plan in enumerate(plans) if j < len(plan)]
        _step(mlm, ids, attn, targets, tokenizer.mask_token_id, banned)
    return [tokenizer.decode(ids[r, 1 : len(p) + 1].tolist()) for r, p in enumerate(pieces)]


def neighbours(mlm: nn.Module, tokenizer: Any, texts: Sequence[str], k: int, ratio: float, seed: int,
               max_len: int = 128) -> list[str]:
    """K neighbours per text, grouped by text (text 0's K, then text 1's K, ...); draw i uses seed + i."""
    if k < 1:
        raise ValueError(f"k={k}; at least one neighbour per forget sample is needed")
    drawn = [rewrite(mlm, tokenizer, texts, ratio, seed + i, max_len) for i in range(k)]
    return [drawn[i][t] for t in range(len(texts)) for i in range(k)]
