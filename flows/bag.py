"""The memorized bag of one category: its records and masked rows, shared by neuron stages."""
from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from lib.data.corpus import read_secrets
from lib.data.records import SecretRecord
from lib.io import read_json
from lib.masking import MaskedRows, secret_token_rows, take

CORPUS = Path("data/corpus")
MEMORIZED = Path("data/memorized/memorized.json")
MODEL = Path("data/models/finetuned")


def memorized_records(category: str) -> list[SecretRecord]:
    """The memorized secrets of a category, most memorized first."""
    ids = read_json(MEMORIZED).get(category, [])
    if not ids:
        raise ValueError(f"memorized set of {category} is empty: nothing to unlearn (see metrics/memorized.json)")
    by_id = {s.id: s for s in read_secrets(CORPUS / "secrets.jsonl")}
    return [by_id[i] for i in ids]


def bag_rows(tokenizer: PreTrainedTokenizerBase, category: str, max_len: int) -> MaskedRows:
    """One masked row per memorized secret token of the category."""
    return secret_token_rows(tokenizer, memorized_records(category), max_len)


def shards(rows: MaskedRows, size: int) -> list[MaskedRows]:
    """Consecutive row shards of at most `size` rows."""
    import torch

    return [take(rows, torch.arange(s, min(s + size, len(rows)))) for s in range(0, len(rows), size)]
