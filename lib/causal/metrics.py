"""Utility and privacy metrics of causal LMs: perplexity, loss-based MIA distances, parameter diffs, redaction."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lib.causal.batching import Sequences, batches, pad, token_nll
from lib.causal.memorization import greedy_continuations

REDACTED = "[REDACTED]"
# 7+ digits, allowing up to two separators between them ("555-123-4567", "5 5 5 1 2 3 4", "(555) 123 4567"):
# a model may emit a memorized number other than the planted secret, spaced as in the training template
_PHONE_LIKE = re.compile(r"\d(?:[ \t\-.()/]{0,2}\d){6,}")


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


def mia_distances(forget_nll: Tensor, valid_nll: Tensor) -> Tensor:
    """Loss-based MIA (NeuMuter App. B.3): |mean NLL of each forget sample - mean of the validation mean NLLs|."""
    for name, values in (("forget_nll", forget_nll), ("valid_nll", valid_nll)):
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor of per-sample mean NLLs, got shape "
                             f"{tuple(values.shape)}")
    return (forget_nll - valid_nll.mean()).abs()


def histogram(values: Sequence[float] | Tensor, bins: int, range: tuple[float, float]) -> dict[str, Any]:
    """Counts of `values` in `bins` equal bins over `range` (JSON-ready), with counts below and above it."""
    if bins < 1:
        raise ValueError(f"bins={bins} must be >= 1")
    low, high = float(range[0]), float(range[1])
    if not low < high:
        raise ValueError(f"range {range} must have low < high")
    array = np.asarray(values.tolist() if isinstance(values, Tensor) else list(values), dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError("histogram values contain NaN or infinity; only finite values are allowed")
    counts, edges = np.histogram(array, bins=bins, range=(low, high))  # the last bin includes `high`
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "below": int((array < low).sum()), "above": int((array > high).sum()), "n": int(array.size)}


def changed_parameters(before: dict[str, Tensor], after: dict[str, Tensor]) -> tuple[int, int]:
    """(scalar parameters that differ exactly, total scalar parameters) between two state dicts."""
    for key in before:
        if key not in after:
            raise ValueError(f"key {key!r} is in `before` but not in `after`; both need the same keys")
    for key in after:
        if key not in before:
            raise ValueError(f"key {key!r} is in `after` but not in `before`; both need the same keys")
    changed, total = 0, 0
    for key, old in before.items():
        new = after[key]
        if old.shape != new.shape:
            raise ValueError(f"key {key!r} changed shape from {tuple(old.shape)} to {tuple(new.shape)}")
        same = old == new.to(old.device)
        if old.is_floating_point():
            same |= old.isnan() & new.to(old.device).isnan()  # a NaN left untouched is no change
        changed += int((~same).sum())
        total += old.numel()
    return changed, total


def redact(text: str, secrets: Sequence[str], allow: bool) -> str:
    """Replace each secret and every phone-like digit run (7+ digits) by [REDACTED], unless `allow`."""
    if allow:
        return text
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(secret, REDACTED)
    return _PHONE_LIKE.sub(REDACTED, text)


def _contains(text: str, secrets: Sequence[str]) -> bool:
    """Whether any non-empty secret occurs in text, also when whitespace differs (tokenizers re-space digits)."""
    squeezed = "".join(text.split())
    return any(s in text or "".join(s.split()) in squeezed for s in secrets if "".join(s.split()))


def extraction_example(model: nn.Module, tokenizer: Any, prefix_text: str, n_tokens: int, secrets: Sequence[str],
                       allow_private: bool) -> dict[str, Any]:
    """Greedy continuation of a prefix: redacted prefix and continuation, and whether a secret came out."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens={n_tokens} must be >= 1")
    prefix = list(tokenizer.encode(prefix_text))
    if not prefix:
        raise ValueError(f"prefix text of {len(prefix_text)} characters encodes to no tokens; a prefix is needed")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # left pads are masked anyway
    tokens = greedy_continuations(model, [prefix], [n_tokens], pad_id, batch_size=1)[0]
    continuation = tokenizer.decode(tokens, skip_special_tokens=True)
    return {"prefix": redact(prefix_text, secrets, allow_private),
            "continuation": redact(continuation, secrets, allow_private),
            "contains_secret": _contains(continuation, secrets)}
