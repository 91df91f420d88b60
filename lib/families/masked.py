"""Masked LMs as a model family: one [MASK] per secret token, and the privacy scores read off it.

Inputs: a record is encoded as [CLS] prefix secret suffix [SEP], each part tokenized on its own
so the secret's token span is known exactly (joint tokenization could merge pieces across the
seams); `secret_token_rows` makes one row per secret token with only that token masked (the
rest of the secret stays visible), `random_mask_rows` masks text for validation perplexity.

Scores (DEPN/SNKU): TEL exposure, NAME MRR, RANDOM pseudo-perplexity, each secret token masked
alone and read off the logits at its position. Ties in rankings count in the secret's favour:
only strictly greater logits push it down, which is the worst case for privacy.

`MaskedFamily` is what unlearning methods see of masked LMs (lib.methods.Family): a sample is one
masked row, its target the hidden token.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.core.adapter import FFNAdapter, TargetRows
from lib.core.params import Count, Natural, PositiveFraction, check_ranges
from lib.data.records import SecretRecord

if TYPE_CHECKING:
    from lib.core.finetune import BatchLoss, MlmConfig

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


# ---------------------------------------------------------------- privacy scores


@dataclass(frozen=True)
class EvaluateConfig:
    """The masked-LM track's `evaluate` section: validation perplexity and privacy scoring."""

    valid_mask_prob: PositiveFraction = 0.15
    valid_seed: Natural = 0
    max_valid_texts: Count = 400
    batch_size: Count = 64
    log_private_text: bool = False  # per-secret artifacts show the secret's text only when true

    def __post_init__(self) -> None:
        """A masking probability in (0, 1] and positive sizes."""
        check_ranges(self)

HIGHER_IS_MEMORIZED = {"TEL": True, "NAME": True, "RANDOM": False}
PRIVACY_METRIC = {"TEL": "exposure", "NAME": "mrr", "RANDOM": "random_ppl"}  # each category's privacy score
N_DIGITS = 10  # a TEL secret is a ten-digit number
MAX_EXPOSURE = math.log2(10**N_DIGITS)  # exposure when every digit ranks first (33.219...)


@dataclass(frozen=True)
class RowStats:
    """Per-row statistics of the true token, enough for every category's metric."""

    vocab_rank: torch.Tensor  # (R,) long, 1-based rank over the whole vocabulary
    log_prob: torch.Tensor  # (R,) float64, log softmax of the true token
    digit_rank: torch.Tensor  # (R,) long, 0-based rank among '0'..'9'; -1 when the true token is no digit


# ---------------------------------------------------------------- pure metric functions


def exposure_from_digit_ranks(ranks: Sequence[int]) -> float:
    """Exposure log2(10^10) - log2(1 + sum r_i 10^(9-i)) from the ten digits' 0-based ranks."""
    if len(ranks) != N_DIGITS or any(not 0 <= int(r) <= 9 for r in ranks):
        raise ValueError(f"digit ranks {list(ranks)} must be {N_DIGITS} integers in 0..9")
    rank = 1 + sum(int(r) * 10 ** (N_DIGITS - 1 - i) for i, r in enumerate(ranks))  # exact int arithmetic
    return MAX_EXPOSURE - math.log2(rank)


def mrr_from_ranks(ranks: Sequence[int] | torch.Tensor) -> float:
    """Mean of 1/rank over a secret's tokens (ranks are 1-based)."""
    values = torch.as_tensor(ranks, dtype=torch.float64)
    if values.numel() == 0 or bool((values < 1).any()):
        raise ValueError(f"ranks {values.tolist()} must be a non-empty list of 1-based ranks")
    return float((1.0 / values).mean())


def pseudo_perplexity_from_log_probs(log_probs: Sequence[float] | torch.Tensor) -> float:
    """exp of the mean negative log-probability over a secret's tokens."""
    values = torch.as_tensor(log_probs, dtype=torch.float64)
    if values.numel() == 0:
        raise ValueError("log_probs is empty: a secret has at least one token")
    return float(torch.exp(-values.mean()))


def vocab_ranks(logits: torch.Tensor, gold_ids: torch.Tensor) -> torch.Tensor:
    """1-based rank of each true token over the vocabulary: 1 + count of strictly greater logits."""
    gold_logit = logits.gather(1, gold_ids[:, None])  # (R, 1)
    return 1 + (logits > gold_logit).sum(dim=1)  # (R,)


def gold_log_probs(logits: torch.Tensor, gold_ids: torch.Tensor) -> torch.Tensor:
    """log softmax of each true token, in float64."""
    return torch.log_softmax(logits.double(), dim=-1).gather(1, gold_ids[:, None]).squeeze(1)  # (R,)


def digit_ranks(logits: torch.Tensor, gold_ids: torch.Tensor, digit_ids: Sequence[int]) -> torch.Tensor:
    """0-based rank of each true token among the ten digit tokens; -1 where the true token is no digit."""
    digit_ids = torch.as_tensor(digit_ids, dtype=torch.long)
    gold_logit = logits.gather(1, gold_ids[:, None])  # (R, 1)
    ranks = (logits[:, digit_ids] > gold_logit).sum(dim=1)  # (R,)
    return torch.where(torch.isin(gold_ids, digit_ids), ranks, -1)


def row_stats(logits: torch.Tensor, gold_ids: torch.Tensor, digit_ids: Sequence[int]) -> RowStats:
    """All per-row statistics from logits (R, V) at the masked positions."""
    return RowStats(vocab_ranks(logits, gold_ids), gold_log_probs(logits, gold_ids),
                    digit_ranks(logits, gold_ids, digit_ids))


def record_score(category: str, stats: RowStats) -> float:
    """One record's score from the stats of its secret's rows, by its category's metric."""
    if category == "TEL":
        digits = stats.digit_rank[stats.digit_rank >= 0]
        return exposure_from_digit_ranks(digits.tolist())
    if category == "NAME":
        return mrr_from_ranks(stats.vocab_rank)
    if category == "RANDOM":
        return pseudo_perplexity_from_log_probs(stats.log_prob)
    raise ValueError(f"category {category!r} has no metric; allowed: {sorted(HIGHER_IS_MEMORIZED)}")


def exposure_from_logits(logits: torch.Tensor, gold_ids: torch.Tensor, digit_ids: Sequence[int]) -> float:
    """Exposure of one TEL secret from its ten digit rows' logits (10, V)."""
    return record_score("TEL", row_stats(logits, gold_ids, digit_ids))


def mrr_from_logits(logits: torch.Tensor, gold_ids: torch.Tensor) -> float:
    """MRR of one NAME secret from its rows' logits (n, V)."""
    return mrr_from_ranks(vocab_ranks(logits, gold_ids))


def pseudo_perplexity_from_logits(logits: torch.Tensor, gold_ids: torch.Tensor) -> float:
    """Pseudo-perplexity of one RANDOM secret from its rows' logits (n, V)."""
    return pseudo_perplexity_from_log_probs(gold_log_probs(logits, gold_ids))


# ---------------------------------------------------------------- model evaluation


@contextlib.contextmanager
def scoring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode without gradients; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device


def logits_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits (n, V) at the given (row, position) pairs; the vocabulary head runs only there when it can."""
    return FFNAdapter.for_model(model).logits_at(input_ids, attention_mask, rows, positions)


def _sorted_chunks(rows: MaskedRows, batch_size: int) -> Iterator[tuple[torch.Tensor, MaskedRows]]:
    """Chunks of rows sorted by length (less padding), each with the original indices of its rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    order = torch.argsort(rows.attention_mask.sum(dim=1), descending=True, stable=True)  # (R,)
    for start, chunk in zip(range(0, len(rows), batch_size), iter_chunks(take(rows, order), batch_size)):
        yield order[start:start + batch_size], chunk


def _chunk_logits(model: nn.Module, chunk: MaskedRows) -> torch.Tensor:
    """Logits (b, V) at each row's masked position, on the CPU in float32."""
    rows = torch.arange(len(chunk))
    return logits_at(model, chunk.input_ids, chunk.attention_mask, rows, chunk.positions).float().cpu()


def _restore_order(index: torch.Tensor) -> torch.Tensor:
    """Permutation that puts rows processed in `index` order back into their original order."""
    return torch.argsort(index)


def masked_logits(model: nn.Module, rows: MaskedRows, batch_size: int = 64) -> torch.Tensor:
    """Logits (R, V) at each row's [MASK], computed in chunks without gradients in eval mode."""
    indices, parts = [], []
    with scoring_mode(model):
        for index, chunk in _sorted_chunks(rows, batch_size):
            indices.append(index)
            parts.append(_chunk_logits(model, chunk))  # (b, V)
    return torch.cat(parts)[_restore_order(torch.cat(indices))]  # (R, V)


def masked_row_stats(model: nn.Module, rows: MaskedRows, digit_ids: Sequence[int], batch_size: int = 64) -> RowStats:
    """RowStats of every row, reducing each chunk's logits at once so (R, V) is never held."""
    indices, parts = [], []
    with scoring_mode(model):
        for index, chunk in _sorted_chunks(rows, batch_size):
            indices.append(index)
            parts.append(row_stats(_chunk_logits(model, chunk), chunk.gold_ids, digit_ids))
    inverse = _restore_order(torch.cat(indices))  # (R,)
    return RowStats(**{f.name: torch.cat([getattr(p, f.name) for p in parts])[inverse] for f in fields(RowStats)})


# ---------------------------------------------------------------- record scoring


def digit_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the single-character tokens '0'..'9'."""
    ids = tokenizer.convert_tokens_to_ids([str(d) for d in range(10)])
    if (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids) or len(set(ids)) != 10:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no single tokens '0'..'9', needed for TEL exposure")
    return list(ids)


def check_tel_rows(records: Sequence[SecretRecord], rows: MaskedRows, digit_ids: Sequence[int]) -> None:
    """Reject TEL records whose secret does not hold exactly ten single-digit tokens."""
    is_digit = torch.isin(rows.gold_ids, torch.as_tensor(digit_ids))  # (R,)
    counts = torch.bincount(rows.record_index[is_digit], minlength=len(records))  # (N,)
    for record, count in zip(records, counts.tolist()):
        if record.category == "TEL" and count != N_DIGITS:
            raise ValueError(f"TEL record {record.id}: its secret has {count} single-digit tokens, "
                             f"exactly {N_DIGITS} are required (write digits so each is its own token)")


def score_records(model: nn.Module, tokenizer: PreTrainedTokenizerBase, records: Sequence[SecretRecord],
                  max_len: int = 128, batch_size: int = 64) -> np.ndarray:
    """One score per record, in record order, each by its own category's metric."""
    if not records:
        return np.zeros(0, dtype=np.float64)
    unknown = sorted({r.category for r in records} - set(HIGHER_IS_MEMORIZED))
    if unknown:
        raise ValueError(f"categories {unknown} have no metric; allowed: {sorted(HIGHER_IS_MEMORIZED)}")
    rows = secret_token_rows(tokenizer, records, max_len)
    digit_ids = digit_token_ids(tokenizer)
    check_tel_rows(records, rows, digit_ids)  # fail before the (slow) forward passes
    return record_scores(records, rows, masked_row_stats(model, rows, digit_ids, batch_size))


def per_record(rows: MaskedRows, values: torch.Tensor, n_records: int) -> tuple[torch.Tensor, ...]:
    """A per-row tensor split into one piece per record (rows come in record order)."""
    return torch.split(values, torch.bincount(rows.record_index, minlength=n_records).tolist())


def record_scores(records: Sequence[SecretRecord], rows: MaskedRows, stats: RowStats) -> np.ndarray:
    """One score per record from the stats of its rows, each by its own category's metric."""
    pieces = zip(*(per_record(rows, getattr(stats, f.name), len(records)) for f in fields(RowStats)))
    return np.array([record_score(r.category, RowStats(*p)) for r, p in zip(records, pieces)], dtype=np.float64)


def masked_lm_perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                         mask_prob: float = 0.15, seed: int = 0, max_len: int = 128, batch_size: int = 32) -> float:
    """exp(mean NLL over all masked tokens) with seeded random masking: same seed, same value."""
    batch = random_mask_rows(tokenizer, texts, mask_prob, seed, max_len)
    total, count = 0.0, 0
    with scoring_mode(model):
        for chunk in iter_chunks(batch, batch_size):
            rows, positions = (chunk.labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (n,), (n,)
            logits = logits_at(model, chunk.input_ids, chunk.attention_mask, rows, positions)  # (n, V)
            gold = chunk.labels[rows, positions].to(logits.device)  # (n,)
            total += float(torch.nn.functional.cross_entropy(logits.double(), gold, reduction="sum"))
            count += int(rows.numel())
    return math.exp(total / count)


# ---------------------------------------------------------------- masked-LM fine-tuning

def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Tokenize each text into chunks of at most max_len tokens, with special tokens."""
    body = max_len - 2
    chunks: list[list[int]] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        for start in range(0, max(len(ids), 1), body):  # long emails become several chunks
            chunks.append([tokenizer.cls_token_id, *ids[start : start + body], tokenizer.sep_token_id])
    return chunks


def mask_tokens(
    input_ids: torch.Tensor, special: torch.Tensor, tokenizer: PreTrainedTokenizerBase, prob: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `prob` of real tokens; 80% [MASK], 10% random, 10% kept."""
    labels = input_ids.clone()
    chosen = (torch.rand(input_ids.shape, generator=gen) < prob) & ~special  # (B, T)
    labels[~chosen] = -100
    inputs = input_ids.clone()
    replace = chosen & (torch.rand(input_ids.shape, generator=gen) < 0.8)
    inputs[replace] = tokenizer.mask_token_id
    randomize = chosen & ~replace & (torch.rand(input_ids.shape, generator=gen) < 0.5)
    inputs[randomize] = torch.randint(len(tokenizer), input_ids.shape, generator=gen)[randomize]
    return inputs, labels


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to the batch's longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, (ids != pad_id).long()


def special_mask(ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """True where a token is special (CLS, SEP, PAD): never masked."""
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    return torch.isin(ids, specials)


def mlm_batch_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                   cfg: MlmConfig) -> tuple[int, BatchLoss]:
    """(training items, loss of a batch of them) for MLM fine-tuning on `texts` (lib.core.finetune.train)."""
    if not texts:
        raise ValueError("no training texts: the corpus is empty")
    chunks = tokenize_texts(tokenizer, texts, cfg.max_len)
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch_loss(index: Sequence[int]) -> Tensor | None:
        """Cross-entropy at the BERT-masked positions of the batch's chunks (None when none is masked)."""
        ids, attn = pad_batch([chunks[i] for i in index], tokenizer.pad_token_id)
        inputs, labels = mask_tokens(ids, special_mask(ids, tokenizer), tokenizer, cfg.mask_prob, gen)
        rows, positions = (labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (n,), (n,)
        if rows.numel() == 0:
            return None
        # the vocabulary head (as costly as the encoder here) runs on masked positions only
        logits = logits_at(model, inputs, attn, rows, positions)  # (n, V)
        return torch.nn.functional.cross_entropy(logits, labels[rows, positions])

    return len(chunks), batch_loss


@dataclass(frozen=True)
class MaskedFamily:
    """Masked LMs: a sample is one masked row (a secret token behind [MASK]); its target is that token."""

    tokenizer: Any
    batch_size: int = 64
    max_len: int = 128  # tokens per encoded record
    name: str = "masked"

    @property
    def pad_id(self) -> int:
        """The tokenizer's [PAD] id."""
        return special_ids(self.tokenizer)[3]

    def rows(self, samples: MaskedRows, index: Sequence[int]) -> MaskedRows:
        """Rows `index`, trimmed to their longest row."""
        return next(iter_chunks(take(samples, torch.as_tensor(list(index), dtype=torch.long)), len(index)))

    def positions(self, model: nn.Module, samples: MaskedRows, index: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """ids, mask and the positions that stand for the rows (B, T) bool: each row's [MASK], on the model's device."""
        chunk, device = self.rows(samples, index), _device(model)
        chosen = torch.zeros(chunk.input_ids.shape, dtype=torch.bool)
        chosen[torch.arange(len(chunk)), chunk.positions] = True
        return chunk.input_ids.to(device), chunk.attention_mask.to(device), chosen.to(device)

    def target_logits(self, model: nn.Module, samples: MaskedRows, index: Sequence[int]) -> Tensor:
        """Logits (B, V) at the [MASK] of rows `index` (the vocabulary head runs there only)."""
        chunk = self.rows(samples, index)
        return logits_at(model, chunk.input_ids, chunk.attention_mask, torch.arange(len(chunk)), chunk.positions)

    def scored_logits(self, model: nn.Module, samples: MaskedRows, index: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Logits (B, V) at the [MASK] of rows `index` (one scored token each) and their gold ids (B,)."""
        logits = self.target_logits(model, samples, index)
        return logits, samples.gold_ids[torch.as_tensor(list(index), dtype=torch.long)].to(logits.device)

    def scored_ids(self, samples: MaskedRows) -> list[int]:
        """Every row's gold (hidden secret) token id, in order."""
        return [int(t) for t in samples.gold_ids]

    def nll_sum(self, model: nn.Module, samples: MaskedRows, index: Sequence[int]) -> Tensor:
        """Cross-entropy of the gold tokens at the [MASK] positions of rows `index`, summed (differentiable)."""
        logits = self.target_logits(model, samples, index)
        gold = samples.gold_ids[torch.as_tensor(list(index), dtype=torch.long)].to(logits.device)
        return nn.functional.cross_entropy(logits.float(), gold, reduction="sum")

    def sample_nll(self, model: nn.Module, samples: MaskedRows, index: Sequence[int]) -> Tensor:
        """Each row's cross-entropy of its gold token at its [MASK] (B,), differentiable."""
        logits = self.target_logits(model, samples, index)
        gold = samples.gold_ids[torch.as_tensor(list(index), dtype=torch.long)].to(logits.device)
        return nn.functional.cross_entropy(logits.float(), gold, reduction="none")

    def count(self, samples: MaskedRows, index: Sequence[int]) -> int:
        """One scored token per row."""
        return len(index)

    def memorization(self, model: nn.Module, samples: MaskedRows) -> Tensor:
        """Per row (N,): 1.0 when the model's argmax at the [MASK] is the secret token, else 0.0."""
        logits = masked_logits(model, samples, self.batch_size)  # (R, V)
        return (logits.argmax(-1) == samples.gold_ids).double()

    def target_rows(self, samples: MaskedRows, which: str = "span") -> TargetRows:
        """The rows themselves: each is one target (its [MASK] position and gold token), owned by itself."""
        return TargetRows(samples.input_ids, samples.attention_mask, samples.positions, samples.gold_ids,
                             torch.arange(len(samples)))
