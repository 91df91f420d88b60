"""Prefect task of the finetune stage."""
from __future__ import annotations

from dataclasses import fields

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.finetune import TrainConfig, TrainLog, train_masked_lm
from lib.params import FinetuneParams


@task(name="train-masked-lm", cache_policy=NO_CACHE)
def train_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], params: FinetuneParams) -> TrainLog:
    """Fine-tune in place with a progress bar."""
    cfg = TrainConfig(**{f.name: getattr(params, f.name) for f in fields(TrainConfig)})  # params add only `model`
    bar = tqdm(desc="finetune", unit="step", mininterval=5.0)

    def on_step(step: int, total: int, loss: float) -> None:
        """Advance the progress bar."""
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    try:
        return train_masked_lm(model, tokenizer, texts, cfg, on_step=on_step)
    finally:
        bar.close()
