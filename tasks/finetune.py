"""Prefect task that fine-tunes a model of either family in place (with a progress bar), and the causal track's use."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.core.finetune import TrainConfig, TrainLog
from lib.data.neighbours import NeighbourConfig
from lib.families.causal import training_sequences
from tasks import autocast_dtype, current_compute, load_model_task, save_model_task
from tasks.parallel import TrainingSet, train_model


@task(name="train", task_run_name="train-{desc}", cache_policy=NO_CACHE)
def train_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: TrainingSet, cfg: TrainConfig,
               desc: str) -> TrainLog:
    """Fine-tune in place on `data` (here, or data-parallel over compute.processes ranks) with a progress bar."""
    bar = tqdm(desc=desc, unit="step", mininterval=5.0)

    def on_step(step: int, total: int, loss: float) -> None:
        """Advance the progress bar."""
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    try:
        return train_model(model, tokenizer, data, cfg, current_compute(), on_step=on_step,
                           autocast=autocast_dtype())
    finally:
        bar.close()


def neighbour_mlm(nb: NeighbourConfig, texts: list[str], max_len: int) -> tuple[PreTrainedModel, Any, int]:
    """NeuMuter's neighbour MLM fine-tuned on `texts` (nb.mlm_epochs passes; 0 keeps it): (mlm, tokenizer, steps)."""
    mlm, tokenizer = load_model_task(nb.mlm, "masked", nb.seed, float32=bool(nb.mlm_epochs))
    if not nb.mlm_epochs:
        return mlm, tokenizer, 0
    cfg = nb.mlm_config(max_len)
    return mlm, tokenizer, train_task(mlm, tokenizer, TrainingSet.masked(texts), cfg, desc="neighbour-mlm").steps


def train_rows(base: Path, rows: list[dict[str, Any]], max_len: int, cfg: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """Fine-tune the causal LM at `base` on rows {"text", "secret", "copies"} (none: keep it), save it; metrics."""
    model, tokenizer = load_model_task(str(base), "causal", float32=True)
    seqs = training_sequences(tokenizer, rows, max_len) if rows else None
    log = (train_task(model, tokenizer, TrainingSet.causal(seqs, tokenizer.pad_token_id), cfg, desc="causal-lm")
           if seqs is not None else None)
    save_model_task(model, tokenizer, out_dir)
    return {"trained": log is not None, **(log.metrics(len(seqs)) if log else
                                           {"samples": 0, "steps": 0, "seconds": 0.0, "epoch_losses": [], "ranks": 1})}
