"""Prefect tasks that score secrets and text with a masked LM (content-cached)."""
from __future__ import annotations

from typing import Sequence

from prefect import task
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.data.records import SecretRecord
from lib.privacy import masked_lm_perplexity, score_records
from tasks.common import cached_task_options


@task(name="score-records", **cached_task_options())
def score_records_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[SecretRecord],
                       max_len: int, batch_size: int, cache_token: str) -> list[float]:
    """Exposure / MRR / pseudo-perplexity of each record (cached by model + records + code)."""
    return [float(x) for x in score_records(model, tokenizer, records, max_len=max_len, batch_size=batch_size)]


@task(name="validation-perplexity", **cached_task_options())
def perplexity_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                    mask_prob: float, seed: int, batch_size: int, cache_token: str) -> float:
    """Masked-LM perplexity on validation text with seeded masks (cached)."""
    return masked_lm_perplexity(model, tokenizer, texts, mask_prob=mask_prob, seed=seed, batch_size=batch_size)
