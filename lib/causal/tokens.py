"""Texts to token windows for a causal LM, keeping the private string's token span."""
from __future__ import annotations

from typing import Any, Sequence

from lib.causal.batching import Sequences


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
