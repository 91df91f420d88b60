"""Prefect tasks that score causal LMs (content-cached), and the helpers that key them."""
from __future__ import annotations

from typing import Any

from prefect import task
from transformers import PreTrainedModel

import lib.families.causal
import lib.families.memorization
from lib.core.io import json_digest
from lib.core.models import ComputeConfig
from lib.families.causal import Sequences, perplexity, sequence_nll
from lib.families.memorization import score_memorization
from tasks import (ModelRef, adopt, cached_task_options, code_digest, current_compute, make_token, model_of,
                   run_all)


@task(name="score-memorization", task_run_name="score-memorization-{label}", **cached_task_options())
def memorization_task(ref: ModelRef, compute: ComputeConfig, seqs: Sequences, pad_id: int, n: int, max_new: int | None,
                      batch_size: int, decode_batch_size: int, label: str, cache_token: str) -> dict[str, Any]:
    """Per-sample MA, EL_n and their secret-span versions of one shard (cached by model + sequences + code)."""
    adopt(compute)
    scores = score_memorization(model_of(ref), seqs, pad_id, n=n, el=True, max_new=max_new, batch_size=batch_size,
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


def shard(seqs: Sequences, size: int) -> list[Sequences]:
    """Consecutive groups of `size` sequences (the last may be shorter)."""
    return [Sequences(seqs.ids[i:i + size], seqs.spans[i:i + size]) for i in range(0, len(seqs.ids), size)]


def memorization_scores(ref: ModelRef, seqs: Sequences, pad_id: int, n: int, max_new: int | None, batch_size: int,
                        decode_batch_size: int, shard_size: int, label: str) -> dict[str, Any]:
    """MA / EL_n / span scores of `seqs` under the model `ref`: one cached task per `shard_size` samples, run by
    the stage's task runner (one after another here, side by side on Ray), joined in order."""
    code = code_digest(lib.families.memorization)
    calls = [{"ref": ref, "compute": current_compute(), "seqs": part, "pad_id": pad_id, "n": n, "max_new": max_new,
              "batch_size": batch_size, "decode_batch_size": decode_batch_size, "label": f"{label}-{i:03d}",
              "cache_token": make_token(model=ref.digest, seqs=json_digest([part.ids, part.spans]), n=n,
                                        max_new=max_new, code=code)}
             for i, part in enumerate(shard(seqs, shard_size))]
    parts = run_all(memorization_task, calls)
    return {key: [x for part in parts for x in part[key]] for key in parts[0]} if parts else {}


def sequence_nlls(model: PreTrainedModel, seqs: Sequences, pad_id: int, digest: str, batch_size: int) -> list[float]:
    """Mean token NLL per sequence (cached)."""
    token = make_token(model=digest, seqs=json_digest(seqs.ids), code=code_digest(lib.families.causal))
    return nll_task(model, seqs, pad_id, batch_size, cache_token=token)


def corpus_perplexity(model: PreTrainedModel, seqs: Sequences, pad_id: int, digest: str, batch_size: int) -> float:
    """Token-weighted perplexity (cached)."""
    token = make_token(model=digest, seqs=json_digest(seqs.ids), code=code_digest(lib.families.causal))
    return perplexity_task(model, seqs, pad_id, batch_size, cache_token=token)
