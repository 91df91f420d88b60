"""Prefect tasks that load and save models (retried: loading touches disk or the hub)."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.io import atomic_dir
from lib.models import load_masked_lm, save_model


@task(name="load-model", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_model_task(source: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a masked LM (embedded name, hub name or local checkpoint folder)."""
    return load_masked_lm(source, seed=seed)


@task(name="save-model", cache_policy=NO_CACHE)
def save_model_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save a checkpoint folder atomically as safetensors."""
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp)
