"""Prefect task of the experiments stage: one in-memory edit + evaluation, cached by content."""
from __future__ import annotations

import copy
from typing import Any, Sequence

from prefect import task
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.data.records import SecretRecord
from lib.families.masked import EvaluateConfig, masked_lm_perplexity, score_records
from lib.methods import Inputs, make_config, unlearn
from lib.reports.experiments import config_fields
from tasks import cached_task_options


@task(name="experiment-run", task_run_name="{label}", **cached_task_options())
def experiment_task(base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: str, section: dict[str, Any],
                    category: str, inputs: Inputs, overrides: dict[str, Any], valid_texts: Sequence[str],
                    records: Sequence[SecretRecord], ev: EvaluateConfig, max_len: int, label: str,
                    cache_token: str) -> dict[str, Any]:
    """Edit a copy of `base`, then its validation PPL and each record's score (ids only, no text)."""
    cfg = make_config(method, section, category, overrides)
    model = copy.deepcopy(base)
    report = unlearn(method, model, inputs, cfg).report
    ppl = masked_lm_perplexity(model, tokenizer, valid_texts, mask_prob=ev.valid_mask_prob, seed=ev.valid_seed,
                               batch_size=ev.batch_size)
    scores = score_records(model, tokenizer, records, max_len=max_len, batch_size=ev.batch_size)
    return {"config": config_fields(cfg), "valid_ppl": float(ppl),
            "scores": {r.id: float(s) for r, s in zip(records, scores)},
            "selection_seconds": report.selection_seconds, "edit_seconds": report.edit_seconds,
            "neurons_edited": len(report.neurons)}
