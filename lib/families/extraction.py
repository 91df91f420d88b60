"""Greedy extraction from a causal LM, and keeping private text out of what is reported about it.

`extraction_example` continues a prefix greedily and says whether a secret came out. The whole forget
sample is private (it is the document being unlearned), not only its secret, so `private_safe_example`
by default keeps no text: whether the continuation holds a secret, how many of its words repeat the true
continuation, and a word-by-word pattern ('=' same word as the true text at that position, 'x' another
word). With `allow_private` the prefix and the continuation are included verbatim.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from lib.core.params import Count, check_ranges
from lib.families.memorization import greedy_continuations

REDACTED = "[REDACTED]"
# 7+ digits, allowing up to two separators between them ("555-123-4567", "5 5 5 1 2 3 4", "(555) 123 4567"):
# a model may emit a memorized number other than the planted secret, spaced as in the training template
_PHONE_LIKE = re.compile(r"\d(?:[ \t\-.()/]{0,2}\d){6,}")


@dataclass(frozen=True)
class CausalEvaluateConfig:
    """The causal track's `causal.evaluate` section: EL_n of every scored model and the extraction example."""

    el_n: Count = 10
    el_max_new: Count | None = None
    batch_size: Count = 16
    decode_batch_size: Count = 64  # rows decoded together (each CPU step reads every weight: 1.65x at 64 vs 16)
    shard_size: Count = 8  # samples per cached scoring task (one Ray task each under compute.runner: ray)
    example_tokens: Count = 24  # greedy tokens of the extraction example
    log_private_text: bool = False  # the example shows forget-set text only when true

    def __post_init__(self) -> None:
        """Positive sizes."""
        check_ranges(self)


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


def match_pattern(generated: Sequence[str], truth: Sequence[str]) -> str:
    """'=' where a generated word equals the true word at the same position, 'x' otherwise."""
    return "".join("=" if i < len(truth) and word == truth[i] else "x" for i, word in enumerate(generated))


def private_safe_example(model: nn.Module, tokenizer: Any, prefix_text: str, true_text: str, n_tokens: int,
                         secrets: Sequence[str], allow_private: bool) -> dict[str, Any]:
    """Greedy continuation of `prefix_text` scored against `true_text`; text only when allowed."""
    raw = extraction_example(model, tokenizer, prefix_text, n_tokens, secrets, allow_private=True)
    generated, truth = raw["continuation"].split(), true_text.split()
    pattern = match_pattern(generated, truth)
    out = {"contains_secret": raw["contains_secret"], "words_generated": len(generated),
           "words_matching": pattern.count("="), "pattern": pattern}
    if allow_private:
        out.update(prefix=raw["prefix"], continuation=raw["continuation"], true_continuation=true_text)
    return out
