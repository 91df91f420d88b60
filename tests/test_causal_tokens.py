"""Texts to causal-LM token windows that keep the secret's token span (MiniLM's fast tokenizer, offline)."""
from __future__ import annotations

import pytest

from lib.families.causal import Sequences, encode, encode_all

LONG = ("hello there , the quick brown fox jumps over the lazy dog . you can call me at 8953119697 to reach me . "
        "please send the revised term sheet for the golden raven deal to Misty Nixon by thursday . best regards jo")


@pytest.fixture(scope="module")
def tok():
    """The embedded MiniLM tokenizer (lowercases; gives character offsets)."""
    from transformers import AutoTokenizer

    from lib.core.models import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("embedded:minilm"))


def pieces(tok, text: str) -> list[int]:
    """Wordpiece ids of `text` without special tokens."""
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("secret", ["8953119697", "Misty Nixon", "quick brown", "best regards jo"])
@pytest.mark.parametrize("max_len", [9, 12, 20])
def test_window_keeps_the_whole_secret(tok, secret: str, max_len: int) -> None:
    full = pieces(tok, LONG)
    assert len(full) > max_len
    ids, span = encode(tok, LONG, secret, max_len)
    assert len(ids) == max_len
    assert _is_window(full, ids)
    assert 1 <= span[0] < span[1] <= len(ids)
    assert secret.lower() in tok.decode(ids[span[0] : span[1]])  # MiniLM lowercases
    assert ids[span[0] : span[1]] == pieces(tok, secret)


def _is_window(full: list[int], ids: list[int]) -> bool:
    """`ids` is a contiguous slice of `full`."""
    return any(full[i : i + len(ids)] == ids for i in range(len(full) - len(ids) + 1))


def test_window_is_a_slice_with_room_before_the_secret(tok) -> None:
    full = pieces(tok, LONG)
    ids, span = encode(tok, LONG, "8953119697", 16)
    assert _is_window(full, ids)
    secret_len = len(pieces(tok, "8953119697"))
    assert span[1] - span[0] == secret_len
    assert span[0] == 3 * (16 - secret_len) // 4  # 3/4 of the spare room before the secret


def test_short_text_is_kept_whole(tok) -> None:
    text = "you can call me at 8953119697 today"
    ids, span = encode(tok, text, "8953119697", 64)
    assert ids == pieces(tok, text)
    assert tok.decode(ids[span[0] : span[1]]) == "8953119697"
    assert encode(tok, text, None, 64) == (pieces(tok, text), None)
    assert encode(tok, text, "", 64)[1] is None


def test_no_secret_long_text_takes_the_start(tok) -> None:
    ids, span = encode(tok, LONG, None, 10)
    assert ids == pieces(tok, LONG)[:10] and span is None


def test_secret_longer_than_max_len(tok) -> None:
    secret = "the revised term sheet for the golden raven deal"
    n = len(pieces(tok, secret))
    with pytest.raises(ValueError, match=rf"{n} tokens \(plus one token of context\) does not fit max_len={n - 1}"):
        encode(tok, LONG, secret, n - 1)


def test_secret_absent(tok) -> None:
    with pytest.raises(ValueError, match="does not occur"):
        encode(tok, LONG, "5550000", 16)
    with pytest.raises(ValueError, match="does not occur"):
        encode_all(tok, [(LONG, "8953119697"), ("short text", "missing")], 16)


def test_secret_filling_all_but_one_token_is_scored_in_full(tok) -> None:
    """max_len = secret tokens + 1: the window must start one token before the secret."""
    secret = "call me at 8953119697 to reach"
    n = len(pieces(tok, secret))
    ids, span = encode(tok, LONG, secret, n + 1)
    assert span == (1, n + 1), f"span {span} drops secret tokens: {tok.decode(ids[span[0]:span[1]])!r}"
    assert ids[1:] == pieces(tok, secret)


def test_secret_on_the_first_token(tok) -> None:
    """Token 0 is never predicted, so a secret that opens the text is refused with a clear message."""
    for secret in ("hello there", "hello"):
        with pytest.raises(ValueError, match="starts at its first token"):
            encode(tok, LONG, secret, 8)


def test_encode_all_builds_sequences(tok) -> None:
    rows = [(LONG, "8953119697"), ("a plain held-out email body", None)]
    seqs = encode_all(tok, rows, 12)
    assert isinstance(seqs, Sequences) and len(seqs) == 2
    assert seqs.spans[1] is None and len(seqs.ids[0]) == 12
    assert seqs.ids[1] == tuple(pieces(tok, rows[1][0]))
    assert tok.decode(seqs.ids[0][seqs.spans[0][0] : seqs.spans[0][1]]) == "8953119697"
