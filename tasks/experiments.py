"""Prefect task of the experiments stage: one in-memory edit + evaluation, cached by content."""
from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Sequence

from prefect import task
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.adapter import FFNAdapter
from lib.data.records import SecretRecord
from lib.experiments import config_fields
from lib.methods import get_method
from lib.methods.base import MethodInputs
from lib.params import EvaluateParams
from lib.privacy import masked_lm_perplexity, score_records
from tasks.common import cached_task_options
from tasks.edit import method_config


@task(name="experiment-run", task_run_name="{label}", **cached_task_options())
def experiment_task(base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: str, section: dict[str, Any],
                    inputs: MethodInputs, overrides: dict[str, Any], valid_texts: Sequence[str],
                    records: Sequence[SecretRecord], ev: EvaluateParams, max_len: int, label: str,
                    cache_token: str) -> dict[str, Any]:
    """Edit a copy of `base`, then its validation PPL and each record's score (ids only, no text)."""
    cfg = method_config(method, section, inputs.category, overrides)
    model = copy.deepcopy(base)
    report = get_method(method).run(model, FFNAdapter.for_model(model), inputs, cfg)
    ppl = masked_lm_perplexity(model, tokenizer, valid_texts, mask_prob=ev.valid_mask_prob, seed=ev.valid_seed,
                               batch_size=ev.batch_size)
    scores = score_records(model, tokenizer, records, max_len=max_len, batch_size=ev.batch_size)
    edit = asdict(report)
    return {"config": config_fields(cfg), "valid_ppl": float(ppl),
            "scores": {r.id: float(s) for r, s in zip(records, scores)},
            "selection_seconds": edit["selection_seconds"], "edit_seconds": edit["edit_seconds"],
            "neurons_edited": len(edit["neurons"])}
