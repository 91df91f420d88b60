"""A masked LM's retain set D_r, for the methods that read one (SIMU, FO/SO-GradDiff, Selective Pruning, RMU,
NPO+RT): training texts that hold no planted secret, each masked at random as in MLM training (`mask_prob` of
its tokens); one row per masked token, its input the text with all of its masks, so the family's NLL over the
rows is the texts' MLM loss. (NeuMuter's neighbours on this family: lib.methods.apneap.counterpart_rows.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from lib.core.params import Count, Natural, PositiveFraction
from lib.families.masked import IGNORE_INDEX, MaskedRows, random_mask_rows


@dataclass(frozen=True)
class RetainConfig:
    """The `retain` section: how many secret-free training texts, the share of tokens masked, the mask seed."""

    texts: Count = 64
    mask_prob: PositiveFraction = 0.15
    seed: Natural = 0


def secret_free(texts: Sequence[str], secrets: Sequence[str]) -> list[str]:
    """The texts that contain none of `secrets` (planted secrets and controls alike), in order."""
    return [t for t in texts if not any(s in t for s in secrets)]


def retain_rows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], cfg: RetainConfig, max_len: int) -> MaskedRows:
    """One row per masked token of the first cfg.texts texts, each masked at random (seeded)."""
    if not texts:
        raise ValueError("no secret-free training text for the retain set; allowed: a corpus with background texts")
    batch = random_mask_rows(tokenizer, list(texts[:cfg.texts]), cfg.mask_prob, cfg.seed, max_len)
    text, position = (batch.labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (R,), (R,) text-major order
    return MaskedRows(input_ids=batch.input_ids[text], attention_mask=batch.attention_mask[text], positions=position,
                      gold_ids=batch.labels[text, position], record_index=text,
                      token_index=torch.arange(len(text)) - torch.searchsorted(text, text))

