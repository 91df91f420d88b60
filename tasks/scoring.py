"""Prefect tasks that score secrets and text with a masked LM, content-cached, and the helpers that key them."""
from __future__ import annotations

from typing import Sequence

from prefect import task
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import lib.families.masked
from lib.core.io import json_digest
from lib.data.records import SecretRecord
from lib.families.masked import EvaluateConfig, masked_lm_perplexity, score_records
from tasks import cached_task_options, code_digest, make_token


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


def record_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, digest: str,
                  records: Sequence[SecretRecord], max_len: int, batch_size: int) -> list[float]:
    """Each record's privacy score under the model with content digest `digest` (cached)."""
    token = make_token(model=digest, records=json_digest([r.to_dict() for r in records]), max_len=max_len,
                       code=code_digest(lib.families.masked))
    return score_records_task(model, tokenizer, records, max_len, batch_size, cache_token=token)


def model_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, digest: str,
                 records: Sequence[SecretRecord], texts: Sequence[str], ev: EvaluateConfig,
                 max_len: int) -> tuple[float, list[float]]:
    """Validation perplexity and each record's privacy score, both cached by the model's content digest."""
    ppl = perplexity_task(model, tokenizer, texts, ev.valid_mask_prob, ev.valid_seed, ev.batch_size,
                          cache_token=make_token(model=digest, texts=json_digest(list(texts)),
                                                 mask=ev.valid_mask_prob, seed=ev.valid_seed,
                                                 code=code_digest(lib.families.masked)))
    return ppl, record_scores(model, tokenizer, digest, records, max_len, ev.batch_size)
