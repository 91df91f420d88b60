"""The masked-LM track's method inputs: a category's memorized secrets as masked rows, and their statistics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lib.core.io import load_tensors, saved_seconds
from lib.data.records import SecretRecord
from lib.families.masked import MaskedFamily, MaskedRows, secret_token_rows
from lib.methods import Inputs, Stats

TIMED = ("attribution", "clusters", "ig")  # statistics whose compute time counts as a method's selection time


def load_stats(stats_dirs: dict[str, Path], category: str, rows: MaskedRows) -> Stats:
    """The category's statistics from the stage outputs, with each timed statistic's compute seconds."""
    files = {name: folder / f"{category}.safetensors" for name, folder in stats_dirs.items()}
    ig = load_tensors(files["ig"])
    if not torch.equal(ig["record_index"], rows.record_index):
        raise ValueError(f"{files['ig']} does not match the memorized rows; re-run the ig stage")
    labels = load_tensors(files["clusters"])["labels"].numpy()  # (L, d_ff)
    return Stats(attribution=load_tensors(files["attribution"])["attribution"],
                 activations=load_tensors(files["activations"])["activations"],
                 clusters={layer: labels[layer] for layer in range(labels.shape[0])}, ig=ig["ig"],
                 ig_owner=ig["record_index"], seconds={name: saved_seconds(files[name]) for name in TIMED})


def masked_inputs(tokenizer: Any, records: list[SecretRecord], stats_dirs: dict[str, Path], category: str,
                  max_len: int, batch_size: int, seed: int) -> Inputs:
    """A masked-LM track method's inputs: one category's memorized secrets as masked rows, and their statistics."""
    rows = secret_token_rows(tokenizer, records, max_len)
    return Inputs(family=MaskedFamily(tokenizer, batch_size, max_len), forget=rows, records=tuple(records),
                  stats=load_stats(stats_dirs, category, rows), seed=seed)
