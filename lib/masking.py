"""Masked-LM inputs: one [MASK] per secret token for scoring, random masks for validation perplexity.

A record is encoded as [CLS] prefix secret suffix [SEP], each part tokenized on its own so the
secret's token span is known exactly (joint tokenization could merge pieces across the seams).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterator, Sequence, TypeVar

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from lib.data.records import SecretRecord

IGNORE_INDEX = -100  # label value the loss skips (the transformers convention)
_SEQUENCE_FIELDS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True)
class MaskedRows:
    """One row per (record, secret token): only that token is [MASK], the rest of the secret is visible."""

    input_ids: torch.Tensor  # (R, T) long, right-padded
    attention_mask: torch.Tensor  # (R, T) long
    positions: torch.Tensor  # (R,) position of the row's [MASK]
    gold_ids: torch.Tensor  # (R,) token id hidden by the mask
    record_index: torch.Tensor  # (R,) index of the row's record in the input list
    token_index: torch.Tensor  # (R,) index of the masked token within the secret

    def __len__(self) -> int:
        """Number of rows."""
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class MaskedBatch:
    """Randomly masked texts with full-sequence labels (IGNORE_INDEX where not masked)."""

    input_ids: torch.Tensor  # (N, T) long, right-padded
    attention_mask: torch.Tensor  # (N, T) long
    labels: torch.Tensor  # (N, T) long, the original id at masked positions, else IGNORE_INDEX

    def __len__(self) -> int:
        """Number of texts."""
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class EncodedRecord:
    """A record's ids as [CLS] prefix secret suffix [SEP] and where its secret lies."""

    input_ids: tuple[int, ...]
    secret_start: int  # position of the secret's first token
    secret_len: int  # number of secret tokens


RowsT = TypeVar("RowsT", MaskedRows, MaskedBatch)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int, int]:
    """Return (cls, sep, mask, pad) ids, rejecting tokenizers that lack any of them."""
    ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id)
    if any(i is None for i in ids):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} lacks [CLS]/[SEP]/[MASK]/[PAD]; "
                         "a BERT-style masked-LM tokenizer is required")
    return ids  # type: ignore[return-value]


def _piece_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of one piece of a record, without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_record(tokenizer: PreTrainedTokenizerBase, record: SecretRecord, max_len: int) -> EncodedRecord:
    """Encode a record within max_len tokens: the prefix is cut from the left, then the suffix from the right."""
    cls_id, sep_id, _, _ = special_ids(tokenizer)
    prefix, secret, suffix = (_piece_ids(tokenizer, part) for part in (record.prefix, record.secret, record.suffix))
    if not secret:
        raise ValueError(f"secret record {record.id}: its secret tokenizes to no tokens")
    budget = max_len - 2 - len(secret)  # context tokens left beside [CLS], [SEP] and the secret
    if budget < 0:
        raise ValueError(f"secret record {record.id}: its secret has {len(secret)} tokens; "
                         f"max_len={max_len} allows at most {max_len - 2}")
    suffix = suffix[:budget]
    keep = min(len(prefix), budget - len(suffix))
    prefix = prefix[len(prefix) - keep:]  # the context nearest the secret matters most
    ids = [cls_id, *prefix, *secret, *suffix, sep_id]
    return EncodedRecord(tuple(ids), 1 + len(prefix), len(secret))


def _record_rows(
    encoded: EncodedRecord, record_index: int, width: int, mask_id: int, pad_id: int
) -> tuple[torch.Tensor, ...]:
    """The rows of one record, in MaskedRows field order."""
    n, length = encoded.secret_len, len(encoded.input_ids)
    base = torch.full((width,), pad_id, dtype=torch.long)
    base[:length] = torch.tensor(encoded.input_ids, dtype=torch.long)
    input_ids = base.repeat(n, 1)  # (n, width)
    token_index = torch.arange(n)  # (n,)
    positions = encoded.secret_start + token_index  # (n,)
    gold = input_ids[token_index, positions].clone()  # (n,)
    input_ids[token_index, positions] = mask_id
    attention = (torch.arange(width) < length).long().repeat(n, 1)  # (n, width)
    return input_ids, attention, positions, gold, torch.full((n,), record_index, dtype=torch.long), token_index


def secret_token_rows(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[SecretRecord], max_len: int = 128
) -> MaskedRows:
    """One row per (record, secret token) with only that token masked, right-padded to the longest row."""
    if not records:
        raise ValueError("no records given: pass at least one SecretRecord")
    _, _, mask_id, pad_id = special_ids(tokenizer)
    encoded = [encode_record(tokenizer, record, max_len) for record in records]
    width = max(len(e.input_ids) for e in encoded)
    blocks = [_record_rows(e, i, width, mask_id, pad_id) for i, e in enumerate(encoded)]
    return MaskedRows(*(torch.cat(parts) for parts in zip(*blocks)))


def _mask_text(ids: torch.Tensor, special: torch.Tensor, mask_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli(mask_prob) choice over non-special positions, forced to at least one."""
    candidates = special == 0  # (T,)
    chosen = (torch.rand(ids.shape[0], generator=generator) < mask_prob) & candidates  # (T,)
    if not chosen.any():
        allowed = candidates.nonzero().flatten()
        chosen[allowed[torch.randint(allowed.numel(), (1,), generator=generator)]] = True
    return chosen


def _masked_text_row(
    tokenizer: PreTrainedTokenizerBase, text: str, number: int, mask_prob: float, max_len: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels) of one text, truncated to max_len."""
    enc = tokenizer(text, truncation=True, max_length=max_len, return_special_tokens_mask=True)
    ids, special = torch.tensor(enc["input_ids"]), torch.tensor(enc["special_tokens_mask"])  # (T,), (T,)
    if bool(special.all()):
        raise ValueError(f"text {number} has no non-special tokens to mask")
    chosen = _mask_text(ids, special, mask_prob, generator)  # (T,)
    return torch.where(chosen, tokenizer.mask_token_id, ids), torch.where(chosen, ids, IGNORE_INDEX)


def random_mask_rows(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], mask_prob: float = 0.15, seed: int = 0, max_len: int = 128
) -> MaskedBatch:
    """Tokenize texts (truncated to max_len) and mask a seeded random subset of non-special tokens."""
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob={mask_prob} is outside (0, 1]")
    if not texts:
        raise ValueError("no texts given: pass at least one text")
    pad_id = special_ids(tokenizer)[3]
    generator = torch.Generator().manual_seed(seed)
    rows = [_masked_text_row(tokenizer, t, i, mask_prob, max_len, generator) for i, t in enumerate(texts)]
    input_ids = pad_sequence([r[0] for r in rows], batch_first=True, padding_value=pad_id)  # (N, T)
    labels = pad_sequence([r[1] for r in rows], batch_first=True, padding_value=IGNORE_INDEX)  # (N, T)
    attention = pad_sequence([torch.ones_like(r[0]) for r in rows], batch_first=True, padding_value=0)  # (N, T)
    return MaskedBatch(input_ids, attention, labels)


def take(rows: RowsT, index: torch.Tensor) -> RowsT:
    """The rows selected by `index` (any integer index tensor or slice), every field alike."""
    return replace(rows, **{f.name: getattr(rows, f.name)[index] for f in fields(rows)})


def iter_chunks(rows: RowsT, batch_size: int) -> Iterator[RowsT]:
    """Yield consecutive sub-batches of batch_size rows, each trimmed to its own longest row."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    for start in range(0, len(rows), batch_size):
        chunk = take(rows, slice(start, start + batch_size))
        length = int(chunk.attention_mask.sum(dim=1).max())  # rows are right-padded
        trimmed = {n: getattr(chunk, n)[:, :length] for n in _SEQUENCE_FIELDS if hasattr(chunk, n)}
        yield replace(chunk, **trimmed)
