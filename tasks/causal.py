"""Prefect tasks of the causal-LM track: load/save, fine-tune, score, unlearn (thin wrappers over lib.causal)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.causal.batching import Sequences, sequence_nll
from lib.causal.finetune import CausalTrainConfig, CausalTrainLog, train_causal_lm
from lib.causal.memorization import score_memorization
from lib.causal.metrics import perplexity
from lib.causal.models import load_causal_lm
from lib.io import atomic_dir
from lib.models import save_model
from tasks.common import cached_task_options


@task(name="load-causal-lm", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_causal_task(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (embedded GGUF, hub name or local folder) in fp32."""
    return load_causal_lm(source)


@task(name="save-causal-lm", cache_policy=NO_CACHE)
def save_causal_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save a checkpoint folder atomically as safetensors."""
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp)


@task(name="train-causal-lm", cache_policy=NO_CACHE)
def train_causal_task(model: PreTrainedModel, seqs: Sequences, pad_id: int, cfg: CausalTrainConfig) -> CausalTrainLog:
    """Fine-tune in place with a progress bar."""
    bar = tqdm(desc="causal finetune", unit="step", mininterval=5.0)

    def on_step(step: int, total: int, loss: float) -> None:
        """Advance the progress bar."""
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    try:
        return train_causal_lm(model, seqs, pad_id, cfg, on_step=on_step)
    finally:
        bar.close()


@task(name="score-memorization", **cached_task_options())
def memorization_task(model: PreTrainedModel, seqs: Sequences, pad_id: int, n: int, el: bool, max_new: int | None,
                      batch_size: int, cache_token: str) -> dict[str, Any]:
    """Per-sample MA, EL_n and their secret-span versions (cached by model + sequences + code)."""
    scores = score_memorization(model, seqs, pad_id, n=n, el=el, max_new=max_new, batch_size=batch_size)
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
