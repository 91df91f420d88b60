"""Causal (decoder-only) LMs as a model family: token sequences, next-token scores, fine-tuning.

A sample is a token sequence (at most max_len tokens) that may hold a secret span; every token
after the first is scored against the logits of the position before it. `CausalFamily` is what
unlearning methods see of causal LMs (lib.methods.Family).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from lib.core.adapter import TargetRows

if TYPE_CHECKING:
    from lib.core.finetune import BatchLoss

@dataclass(frozen=True)
class Sequences:
    """Token sequences (each with at least 2 tokens) and optional secret spans [start, end) in token indices."""

    ids: tuple[tuple[int, ...], ...]
    spans: tuple[tuple[int, int] | None, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.spans):
            raise ValueError(f"{len(self.ids)} sequences but {len(self.spans)} spans")
        for i, (row, span) in enumerate(zip(self.ids, self.spans)):
            if len(row) < 2:
                raise ValueError(f"sequence {i} has {len(row)} tokens; at least 2 are needed to score a next token")
            if span is not None and not 1 <= span[0] < span[1] <= len(row):
                raise ValueError(f"sequence {i}: span {span} outside 1..{len(row)} (the first token is never scored)")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> "Sequences":
        """The sequences at `index`, in that order."""
        return Sequences(tuple(self.ids[i] for i in index), tuple(self.spans[i] for i in index))


def of(ids: Sequence[Sequence[int]], spans: Sequence[tuple[int, int] | None] | None = None) -> Sequences:
    """Build Sequences from plain lists (no spans when `spans` is None)."""
    return Sequences(tuple(tuple(int(t) for t in row) for row in ids),
                     tuple(spans) if spans is not None else (None,) * len(ids))


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token rows: ids (B, T) and attention mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def batches(n: int, size: int) -> Iterator[list[int]]:
    """Consecutive index batches of at most `size`."""
    if size < 1:
        raise ValueError(f"batch size {size} must be >= 1")
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))


def on_model(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """ids and mask moved to the model's device (batches are built on the CPU)."""
    device = next(model.parameters()).device
    return ids.to(device), mask.to(device)


def logits_of(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Next-token logits (B, T-1, V) for positions 0..T-2 (predicting tokens 1..T-1)."""
    ids, mask = on_model(model, ids, mask)
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1]


def token_nll(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token NLL (B, T-1) of tokens 1..T-1 and their validity mask (B, T-1), differentiable."""
    ids, mask = on_model(model, ids, mask)
    logits = logits_of(model, ids, mask)
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    valid = mask[:, 1:].bool()
    return nll * valid, valid


def sequence_nll(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16) -> Tensor:
    """Mean per-token NLL of each sequence (N,), no gradient."""
    out = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = pad([seqs.ids[i] for i in index], pad_id)
            nll, valid = token_nll(model, ids, mask)
            out.append((nll.sum(1) / valid.sum(1)).cpu())
    return torch.cat(out)


def _span_mask(seqs: Sequences, index: list[int], width: int) -> Tensor:
    """(B, width) mask of the scored positions (token t-1 predicts t) inside each row's span."""
    out = torch.zeros((len(index), width), dtype=torch.bool)
    for r, i in enumerate(index):
        span = seqs.spans[i]
        if span is not None:
            out[r, span[0] - 1 : span[1] - 1] = True
    return out


def accuracy(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16,
             span: bool = False) -> Tensor:
    """Teacher-forced argmax accuracy (MA) per sequence (N,); over the secret span when `span` (NaN if none)."""
    out = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = on_model(model, *pad([seqs.ids[i] for i in index], pad_id))
            hit = (logits_of(model, ids, mask).argmax(-1) == ids[:, 1:]).cpu()  # (B, T-1)
            ids, mask = ids.cpu(), mask.cpu()
            scored = _span_mask(seqs, index, hit.shape[1]) if span else mask[:, 1:].bool()
            out.append((hit & scored).sum(1) / scored.sum(1).clamp(min=1) + torch.where(scored.any(1), 0.0, float("nan")))
    return torch.cat(out)


def mean_ma(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16, span: bool = False) -> float:
    """Mean teacher-forced accuracy over the sequences (over their secret spans when `span`; sequences without one
    left out)."""
    values = [v for v in accuracy(model, seqs, pad_id, batch_size, span=span).tolist() if not math.isnan(v)]
    if not values:
        raise ValueError(f"no sequence {'has a secret span' if span else 'to score'}; allowed: sequences with at least "
                         "one scored token (and their secret span marked)")
    return sum(values) / len(values)


# ---------------------------------------------------------------- token windows

def _char_span(text: str, secret: str | None) -> tuple[int, int] | None:
    """Character range of the first occurrence of `secret` in `text` (None when no secret)."""
    if not secret:
        return None
    start = text.find(secret)
    if start < 0:
        raise ValueError("a candidate's secret does not occur in its text")
    return start, start + len(secret)


def _token_span(offsets: Sequence[tuple[int, int]], chars: tuple[int, int]) -> tuple[int, int]:
    """Tokens whose character range overlaps `chars` (a leading-space token counts)."""
    hit = [i for i, (a, b) in enumerate(offsets) if a < chars[1] and b > chars[0]]
    return hit[0], hit[-1] + 1


def _window(n: int, span: tuple[int, int] | None, max_len: int) -> int:
    """Start of a window of max_len tokens holding the span and one token before it (token 0 is never
    predicted), with 3/4 of the spare room before the span."""
    if span is None:
        return 0
    width, before = span[1] - span[0], min(span[0], 1)
    if width + before > max_len:
        raise ValueError(f"a secret of {width} tokens (plus one token of context) does not fit max_len={max_len}")
    if n <= max_len:
        return 0
    start = min(span[0] - 3 * (max_len - width) // 4, span[0] - before)
    return min(max(start, 0), n - max_len)


def encode(tokenizer: Any, text: str, secret: str | None, max_len: int) -> tuple[list[int], tuple[int, int] | None]:
    """Token ids (at most max_len) of `text` and the secret's token span inside them."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, chars = enc["input_ids"], _char_span(text, secret)
    span = _token_span(enc["offset_mapping"], chars) if chars else None
    start = _window(len(ids), span, max_len)
    ids = ids[start : start + max_len]
    if span is not None:
        if span[0] - start < 1:  # the secret opens the text: nothing before it to predict it from
            raise ValueError("a candidate's secret starts at its first token; give it some preceding text")
        span = (span[0] - start, span[1] - start)
    return ids, span


def encode_all(tokenizer: Any, rows: Sequence[tuple[str, str | None]], max_len: int) -> Sequences:
    """Encode (text, secret) rows into Sequences; texts shorter than 2 tokens are an error."""
    pairs = [encode(tokenizer, text, secret, max_len) for text, secret in rows]
    return Sequences(tuple(tuple(ids) for ids, _ in pairs), tuple(span for _, span in pairs))


# ---------------------------------------------------------------- perplexity and fine-tuning

def perplexity(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16) -> float:
    """Token-weighted exp(mean NLL) over every scored token of every sequence."""
    if len(seqs) == 0:
        raise ValueError("perplexity of an empty set of sequences (0 sequences given)")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = pad([seqs.ids[i] for i in index], pad_id)
            nll, valid = token_nll(model, ids.to(device), mask.to(device))
            total += float(nll.double().sum())
            count += int(valid.sum())
    return math.exp(total / count)


def expand_copies(seqs: Sequences, copies: list[int]) -> Sequences:
    """Repeat each sequence as many times as it occurs in the training text."""
    if len(copies) != len(seqs) or min(copies, default=1) < 1:
        raise ValueError(f"copies must give one count >= 1 per sequence; got {len(copies)} for {len(seqs)}")
    return seqs.subset([i for i, c in enumerate(copies) for _ in range(c)])


def training_sequences(tokenizer: Any, rows: Sequence[dict[str, Any]], max_len: int) -> Sequences:
    """Token windows of training rows {"text", "secret", "copies"}, each repeated `copies` times."""
    return expand_copies(encode_all(tokenizer, [(r["text"], r["secret"]) for r in rows], max_len),
                         [r["copies"] for r in rows])


def nll_batch_loss(model: nn.Module, seqs: Sequences, pad_id: int) -> BatchLoss:
    """The loss of a batch of sequences for causal-LM fine-tuning: mean NLL over its scored tokens."""
    def batch_loss(index: Sequence[int]) -> Tensor:
        """Mean NLL over the batch's scored tokens."""
        nll, valid = token_nll(model, *pad([seqs.ids[i] for i in index], pad_id))
        return nll.sum() / valid.sum()

    return batch_loss


# ---------------------------------------------------------------- the family

TARGETS = ("span", "all")


def target_tokens(seqs: Sequences, i: int, which: str) -> list[int]:
    """Indices t >= 1 of sequence i's target tokens: its span ("span"; every token without one) or all."""
    if which not in TARGETS:
        raise ValueError(f"targets={which!r} invalid; allowed {TARGETS}")
    span = seqs.spans[i]
    if which == "span" and span is not None:
        return list(range(span[0], span[1]))
    return list(range(1, len(seqs.ids[i])))


@dataclass(frozen=True)
class CausalFamily:
    """Decoder-only LMs: a sample is a token sequence, every token after the first is a scored target."""

    tokenizer: Any
    batch_size: int = 16
    name: str = "causal"

    @property
    def pad_id(self) -> int:
        """The padding id (EOS where the tokenizer has no pad token; padded positions are masked)."""
        return int(self.tokenizer.pad_token_id)

    def batch(self, model: nn.Module, samples: Sequences, index: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Right-padded ids and mask (B, T) of samples `index`, on the model's device."""
        ids, mask = pad([samples.ids[i] for i in index], self.pad_id)
        return on_model(model, ids, mask)

    def positions(self, model: nn.Module, samples: Sequences, index: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """ids, mask and the positions that stand for the samples (B, T) bool: every real token."""
        ids, mask = self.batch(model, samples, index)
        return ids, mask, mask.bool()

    def nll_sum(self, model: nn.Module, samples: Sequences, index: Sequence[int]) -> Tensor:
        """Next-token NLL summed over the scored tokens of samples `index` (differentiable)."""
        nll, _valid = token_nll(model, *self.batch(model, samples, index))  # (B, T-1), zero at padding
        return nll.sum()

    def sample_nll(self, model: nn.Module, samples: Sequences, index: Sequence[int]) -> Tensor:
        """Each sample's next-token NLL summed over its scored tokens (B,), differentiable."""
        nll, _valid = token_nll(model, *self.batch(model, samples, index))  # (B, T-1), zero at padding
        return nll.sum(1)

    def scored_logits(self, model: nn.Module, samples: Sequences, index: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Next-token logits (n, V) at every scored position of samples `index`, in order, and the gold ids (n,)."""
        ids, mask = self.batch(model, samples, index)
        valid = mask[:, 1:].bool()  # (B, T-1): position t predicts token t+1, padding excluded
        return logits_of(model, ids, mask)[valid], ids[:, 1:][valid]

    def scored_ids(self, samples: Sequences) -> list[int]:
        """Every scored token id: tokens 1..T-1 of each sequence, in order."""
        return [int(t) for row in samples.ids for t in row[1:]]

    def count(self, samples: Sequences, index: Sequence[int]) -> int:
        """Scored tokens (every token but the first) of samples `index`."""
        return sum(len(samples.ids[i]) - 1 for i in index)

    def memorization(self, model: nn.Module, samples: Sequences) -> Tensor:
        """MA per sample (N,): teacher-forced argmax accuracy over its scored tokens."""
        return accuracy(model, samples, self.pad_id, self.batch_size)

    def target_rows(self, samples: Sequences, which: str = "span") -> TargetRows:
        """One next-token row per target token of every sample (span tokens, or all), padded."""
        prefixes, positions, gold, owner = [], [], [], []
        for i, ids in enumerate(samples.ids):
            for t in target_tokens(samples, i, which):
                prefixes.append(ids[:t])
                positions.append(t - 1)
                gold.append(ids[t])
                owner.append(i)
        if not prefixes:
            raise ValueError(f"{len(samples)} sequences give no target tokens; allowed: at least one sequence")
        input_ids, mask = pad(prefixes, self.pad_id)
        longs = [torch.tensor(v, dtype=torch.long) for v in (positions, gold, owner)]
        return TargetRows(input_ids, mask, *longs)
