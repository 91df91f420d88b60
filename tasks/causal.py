"""Prefect tasks that score causal LMs (content-cached), and the helpers that key them."""
from __future__ import annotations

from typing import Any

from prefect import task
from transformers import PreTrainedModel

import lib.families.causal
import lib.families.memorization
from lib.core.io import json_digest
from lib.families.causal import Sequences, perplexity, sequence_nll
from lib.families.memorization import score_memorization
from tasks import cached_task_options, code_digest, make_token


@task(name="score-memorization", **cached_task_options())
def memorization_task(model: PreTrainedModel, seqs: Sequences, pad_id: int, n: int, el: bool, max_new: int | None,
                      batch_size: int, decode_batch_size: int, cache_token: str) -> dict[str, Any]:
    """Per-sample MA, EL_n and their secret-span versions (cached by model + sequences + code)."""
    scores = score_memorization(model, seqs, pad_id, n=n, el=el, max_new=max_new, batch_size=batch_size,
                                decode_batch_size=decode_batch_size)
    return {"ma": scores.ma, "el": scores.el, "span_ma": scores.span_ma, "span_el": scores.span_el,
            "span_exact": scores.span_exact}


@task(name="sequence-nll", **cached_task_options())
def nll_task(model: PreTrainedModel, seqs: Sequences, pad_id: int, batch_size: int, cache_token: str) -> list[float]:
    """Mean token NLL of each sequence (the loss-based MIA's input; cached)."""
    return [float(x) for x in sequence_nll(model, seqs, pad_id, batch_size)]


@task(name="perplexity", **cached_task_options())
def perplexity_task(model: PreTrainedModel, seqs: Sequences, pad_id: int, batch_size: int, cache_token: str) -> float:
    """Token-weighted perplexity of a corpus (cached)."""
    return perplexity(model, seqs, pad_id, batch_size)


def memorization_scores(model: PreTrainedModel, seqs: Sequences, pad_id: int, digest: str, n: int,
                        max_new: int | None, batch_size: int, decode_batch_size: int) -> dict[str, Any]:
    """MA / EL_n / span scores of `seqs` under the model with content digest `digest` (cached)."""
    token = make_token(model=digest, seqs=json_digest([seqs.ids, seqs.spans]), n=n, max_new=max_new,
                       code=code_digest(lib.families.memorization))
    return memorization_task(model, seqs, pad_id, n, True, max_new, batch_size, decode_batch_size, cache_token=token)


def sequence_nlls(model: PreTrainedModel, seqs: Sequences, pad_id: int, digest: str, batch_size: int) -> list[float]:
    """Mean token NLL per sequence (cached)."""
    token = make_token(model=digest, seqs=json_digest(seqs.ids), code=code_digest(lib.families.causal))
    return nll_task(model, seqs, pad_id, batch_size, cache_token=token)


def corpus_perplexity(model: PreTrainedModel, seqs: Sequences, pad_id: int, digest: str, batch_size: int) -> float:
    """Token-weighted perplexity (cached)."""
    token = make_token(model=digest, seqs=json_digest(seqs.ids), code=code_digest(lib.families.causal))
    return perplexity_task(model, seqs, pad_id, batch_size, cache_token=token)
