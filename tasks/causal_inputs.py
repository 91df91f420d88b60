"""A causal-LM track method's inputs, read from the track's files: D_f, its neighbours, D_r, the Eq. 17 MA
threshold and (for a neuron method) D_f's neuron statistics. The unlearning and calibration stages share it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lib.core.io import MissingInput, read_json, read_jsonl
from lib.data.records import forget_candidates
from lib.families.causal import CausalFamily, Sequences, encode_all, of
from lib.methods import STATISTICS, Inputs, Stats
from tasks.statistics import causal_statistics


def retain_sequences(tokenizer: Any, corpus: Path, max_len: int, n: int) -> Sequences:
    """D_r: the first `n` background (secret-free) training emails of `corpus`; public text for dumps."""
    rows = [r for r in read_jsonl(corpus / "train.jsonl") if not r["secret"]]
    rows = rows or read_jsonl(corpus / "public.jsonl")  # a JSONL / TDEC dump brings no training text
    return encode_all(tokenizer, [(r["text"], None) for r in rows[:n]], max_len)


def causal_inputs(model: Any, tokenizer: Any, cfg: dict[str, Any], needs: tuple[str, ...], corpus: Path,
                  memorized: Path, neighbours: Path, finetuned: Path) -> Inputs:
    """D_f (memorized/forget.json's samples of corpus/candidates.jsonl), its neighbours, D_r, the MA threshold and,
    when the method `needs` them, the statistics of the fine-tuned model at `finetuned` (cached by content)."""
    candidates = forget_candidates(corpus / "candidates.jsonl", memorized / "forget.json")
    near = [tokenizer(r["text"], add_special_tokens=False)["input_ids"][: cfg["max_len"]]
            for r in read_jsonl(neighbours / "neighbours.jsonl")]
    family = CausalFamily(tokenizer, cfg["batch_size"])
    forget = encode_all(tokenizer, [(c.text, c.secret) for c in candidates], cfg["max_len"])
    stats = causal_statistics(model, finetuned, family, forget, cfg["neurons"], "D_f") \
        if set(STATISTICS) & set(needs) else Stats()
    return Inputs(family=family, forget=forget, neighbours=of(near), stats=stats,
                  retain=retain_sequences(tokenizer, corpus, cfg["max_len"], cfg["retain_samples"]),
                  stop=read_json(memorized / "forget.json")["thresholds"]["ma"], seed=cfg["seed"])


def require_reference(folders: Sequence[Path], retrain_metrics: Path, needed_by: str, target: str) -> None:
    """Each folder holds a model and the causal track trained its retrained reference (what `needed_by` reads
    against); else the error names the DVC `target` to run first, or the params value that turned retraining off."""
    for folder in folders:
        if not (folder / "model.safetensors").is_file():
            raise MissingInput(f"{folder}/model.safetensors not found; allowed: run the causal track first "
                               f"(`dvc repro {target}`)")
    if not read_json(retrain_metrics).get("trained"):
        raise ValueError(f"{needed_by} need the retrained reference, which this configuration does not train "
                         "(causal.finetune.epochs: 0); allowed: a fine-tuned causal track")
