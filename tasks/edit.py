"""The masked-LM track's method inputs: a category's memorized secrets as masked rows, and their statistics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lib.core.io import load_tensors, read_jsonl, saved_seconds
from lib.data.records import SecretRecord, read_documents
from lib.families.masked import MaskedFamily, MaskedRows, secret_token_rows
from lib.families.masked_retain import RetainConfig, retain_rows, secret_free
from lib.methods import Inputs, Stats
from lib.methods.apneap import counterparts

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


def counterpart_rows(tokenizer: Any, records: list[SecretRecord], forget: MaskedRows, seed: int,
                     max_len: int) -> MaskedRows:
    """NeuMuter's neighbours on a masked LM: each forget row's record desensitized (APNEAP's same-length
    placeholder), masked at the same token, so K = 1 neighbour per row, aligned with it position by position."""
    rows = secret_token_rows(tokenizer, counterparts(tokenizer, records, seed, max_len), max_len)
    if not (torch.equal(rows.positions, forget.positions) and torch.equal(rows.record_index, forget.record_index)):
        raise ValueError("the counterparts' rows do not align with the forget rows; allowed: rows of the same records")
    return rows


def masked_retain(tokenizer: Any, corpus: Path, cfg: RetainConfig, max_len: int) -> MaskedRows:
    """D_r of the masked track: the first training texts that hold no secret (planted or control), masked at random."""
    secrets = [r["secret"] for r in read_jsonl(corpus / "secrets.jsonl")]
    texts = secret_free([d.text for d in read_documents(corpus / "train.jsonl")], secrets)
    return retain_rows(tokenizer, texts, cfg, max_len)


def masked_inputs(tokenizer: Any, records: list[SecretRecord], stats_dirs: dict[str, Path], category: str,
                  max_len: int, batch_size: int, seed: int, needs: tuple[str, ...] = (),
                  retain: MaskedRows | None = None) -> Inputs:
    """A masked-LM track method's inputs: one category's memorized secrets as masked rows, their statistics, the
    retain rows given, and (when the method `needs` them) the secrets' counterparts as neighbours."""
    rows = secret_token_rows(tokenizer, records, max_len)
    near = counterpart_rows(tokenizer, records, rows, seed, max_len) if "neighbours" in needs else None
    return Inputs(family=MaskedFamily(tokenizer, batch_size, max_len), forget=rows, records=tuple(records),
                  stats=load_stats(stats_dirs, category, rows), seed=seed, neighbours=near,
                  retain=retain)
