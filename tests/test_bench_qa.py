"""lib.bench.qa on a tiny LLaMA checkpoint with MiniLM's word-piece tokenizer (no eos: sep 102 ends answers)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lib.bench.qa import answer_logprob, encode_pairs, eos_id, greedy_answers, span_logprob
from lib.core.models import load_model
from tests.tiny_models import save_tiny_causal_checkpoint

PROMPTS = ["Question: who wrote the letter to the board?\nAnswer:", "Where is the house?"]
ANSWERS = ["the old mayor of the town", "north"]
LONG = " ".join(["the quick brown fox jumps over a lazy dog"] * 12)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Any, Any]:
    """The tiny causal LM in float64 and its tokenizer."""
    path = save_tiny_causal_checkpoint(tmp_path_factory.mktemp("tiny-causal"))
    model, tokenizer = load_model(str(path), "causal")
    return model.double(), tokenizer


def ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids without special tokens (independent of lib.bench.qa's helper)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class Renamed:
    """A tokenizer wrapper whose end token is `eos` and whose decode renders `newline_id` as a newline."""

    def __init__(self, inner: Any, eos: int | None = None, newline_id: int | None = None) -> None:
        self.inner, self.eos_token_id, self.newline_id = inner, eos, newline_id
        self.sep_token_id, self.pad_token_id = inner.sep_token_id, inner.pad_token_id

    def __call__(self, text: str, **kwargs: Any) -> Any:
        """The inner tokenizer's encoding."""
        return self.inner(text, **kwargs)

    def decode(self, tokens: list[int], skip_special_tokens: bool = False) -> str:
        """The inner decoding, with a newline in place of every `newline_id`."""
        parts, run = [], []
        for token in tokens:
            if token == self.newline_id:
                parts.append(self.inner.decode(run, skip_special_tokens=skip_special_tokens) + "\n")
                run = []
            else:
                run.append(token)
        return "".join(parts) + self.inner.decode(run, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: list[list[int]]) -> list[str]:
        """decode of each row."""
        return [self.decode(row) for row in rows]

    def __len__(self) -> int:
        """The inner vocabulary's size."""
        return len(self.inner)


# ---------------------------------------------------------------- eos_id and encode_pairs

def test_eos_id_prefers_eos_then_sep_and_raises_without_both() -> None:
    assert eos_id(SimpleNamespace(eos_token_id=7, sep_token_id=9)) == 7
    assert eos_id(SimpleNamespace(eos_token_id=None, sep_token_id=9)) == 9
    assert eos_id(SimpleNamespace(eos_token_id=0)) == 0  # id 0 is a valid token, not "missing"
    with pytest.raises(ValueError, match="no eos or sep"):
        eos_id(SimpleNamespace(eos_token_id=None, sep_token_id=None))
    with pytest.raises(ValueError, match="no eos or sep"):
        eos_id(SimpleNamespace(eos_token_id=None))


def test_spans_cover_exactly_answer_and_end_token(loaded) -> None:
    _, tok = loaded
    seqs = encode_pairs(tok, PROMPTS, ANSWERS, max_len=64)
    assert eos_id(tok) == tok.sep_token_id == 102
    for row, span, prompt, answer in zip(seqs.ids, seqs.spans, PROMPTS, ANSWERS):
        start, end = span
        assert list(row[:start]) == ids(tok, prompt)
        assert list(row[start:end]) == ids(tok, " " + answer) + [102]
        assert end == len(row)


def test_long_prompt_is_cut_from_the_left(loaded) -> None:
    _, tok = loaded
    prompt = "first words " + LONG + " last question?"
    max_len = 20
    seqs = encode_pairs(tok, [prompt], ["the answer"], max_len)
    (row,), ((start, end),) = seqs.ids, seqs.spans
    answer = ids(tok, " the answer") + [102]
    assert len(row) == max_len and end == max_len
    assert list(row[start:end]) == answer
    assert list(row[:start]) == ids(tok, prompt)[-(max_len - len(answer)):]  # the prompt's end is kept


def test_overlong_answer_keeps_one_prompt_token(loaded) -> None:
    _, tok = loaded
    seqs = encode_pairs(tok, ["who?"], [LONG], max_len=8)
    (row,), ((start, end),) = seqs.ids, seqs.spans
    assert len(row) == 8 and (start, end) == (1, 8)
    assert row[0] == ids(tok, "who?")[-1]
    assert list(row[1:]) == ids(tok, " " + LONG)[:7]


def test_empty_prompt_is_conditioned_on_the_end_token(loaded) -> None:
    _, tok = loaded
    seqs = encode_pairs(tok, [""], ["north"], max_len=16)
    (row,), (span,) = seqs.ids, seqs.spans
    assert row[0] == 102 and span == (1, len(row))


def test_encode_pairs_errors(loaded) -> None:
    _, tok = loaded
    with pytest.raises(ValueError, match="max_len=2"):
        encode_pairs(tok, PROMPTS, ANSWERS, max_len=2)
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        encode_pairs(tok, PROMPTS, ANSWERS[:1], max_len=32)
    with pytest.raises(ValueError, match="no eos or sep"):
        encode_pairs(SimpleNamespace(eos_token_id=None, sep_token_id=None), ["a"], ["b"], max_len=8)
    assert len(encode_pairs(tok, PROMPTS, ANSWERS, max_len=3)) == 2  # 3 is the smallest budget allowed


# ---------------------------------------------------------------- answer_logprob

def direct_logprob(model: Any, tok: Any, prompt: str, answer: str) -> float:
    """Mean log-softmax probability of the answer tokens + end token, one unpadded sequence."""
    head, tail = ids(tok, prompt), ids(tok, " " + answer) + [102]
    row = torch.tensor([head + tail])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=row).logits[0].double(), -1)
    return sum(float(logp[len(head) + j - 1, t]) for j, t in enumerate(tail)) / len(tail)


def test_answer_logprob_equals_direct_computation(loaded) -> None:
    model, tok = loaded
    expected = torch.tensor([direct_logprob(model, tok, p, a) for p, a in zip(PROMPTS, ANSWERS)], dtype=torch.float64)
    one = answer_logprob(model, tok, PROMPTS, ANSWERS, max_len=64, batch_size=1)
    two = answer_logprob(model, tok, PROMPTS, ANSWERS, max_len=64, batch_size=2)
    assert one.dtype == torch.float64 and one.shape == (2,)
    assert torch.allclose(one, expected, atol=1e-10, rtol=0)
    assert torch.allclose(two, expected, atol=1e-10, rtol=0)  # right padding changes nothing
    assert (one < 0).all() and abs(float(one[0] - one[1])) > 1e-6


def test_span_logprob_of_no_sequences(loaded) -> None:
    model, tok = loaded
    empty = encode_pairs(tok, [], [], max_len=8)
    out = span_logprob(model, empty, tok.pad_token_id)
    assert out.shape == (0,) and out.dtype == torch.float64


# ---------------------------------------------------------------- greedy_answers

def manual_greedy(model: Any, head: list[int], max_new: int) -> list[int]:
    """max_new argmax tokens after `head`, one full forward per step (no cache, no padding)."""
    row = list(head)
    with torch.no_grad():
        for _ in range(max_new):
            row.append(int(model(input_ids=torch.tensor([row])).logits[0, -1].argmax()))
    return row[len(head):]


def expected_answer(tok: Any, tokens: list[int], eos: int) -> str:
    """Tokens up to the end token, decoded, up to the first newline, stripped."""
    if eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tok.decode(tokens, skip_special_tokens=True).split("\n")[0].strip()


GREEDY_PROMPTS = ["Question: who wrote the letter?\nAnswer:", "hello", "begin " + LONG + " end"]


@pytest.fixture(scope="module")
def greedy_tokens(loaded) -> list[list[int]]:
    """The manual loop's tokens for GREEDY_PROMPTS (max_new 6, max_len 16: heads cut to 10 tokens)."""
    model, tok = loaded
    return [manual_greedy(model, ids(tok, p)[-10:], 6) for p in GREEDY_PROMPTS]


def test_greedy_answers_equal_manual_loop(loaded, greedy_tokens) -> None:
    model, tok = loaded
    got = greedy_answers(model, tok, GREEDY_PROMPTS, max_new=6, max_len=16, batch_size=2)
    assert got == [expected_answer(tok, t, 102) for t in greedy_tokens]
    assert any(got)  # a random model still emits some visible word-pieces
    assert greedy_answers(model, tok, GREEDY_PROMPTS, max_new=6, max_len=16, batch_size=3) == got  # deterministic


def test_greedy_answers_cut_at_end_token(loaded, greedy_tokens) -> None:
    model, tok = loaded
    tokens = greedy_tokens[0]
    cut_at = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])  # a first occurrence past 0
    wrapped = Renamed(tok, eos=tokens[cut_at])
    (got,) = greedy_answers(model, wrapped, GREEDY_PROMPTS[:1], max_new=6, max_len=16)
    assert got == tok.decode(tokens[:cut_at], skip_special_tokens=True).strip()
    assert got != expected_answer(tok, tokens, 102)


def test_greedy_answers_cut_at_newline(loaded, greedy_tokens) -> None:
    model, tok = loaded
    tokens = greedy_tokens[2]
    cut_at = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    wrapped = Renamed(tok, newline_id=tokens[cut_at])
    (got,) = greedy_answers(model, wrapped, GREEDY_PROMPTS[2:], max_new=6, max_len=16)
    assert got == tok.decode(tokens[:cut_at], skip_special_tokens=True).strip()
    assert "\n" not in got


def test_greedy_answers_condition_on_the_left_cut_prompt(loaded, monkeypatch) -> None:
    import lib.bench.qa as qa

    model, tok = loaded
    seen = {}
    real = qa.greedy_continuations

    def spy(model, heads, lengths, pad_id, batch_size, stop=()):
        """Record what greedy_answers asks to decode, then decode it."""
        seen.update(heads=heads, lengths=lengths, pad_id=pad_id, stop=stop)
        return real(model, heads, lengths, pad_id, batch_size, stop=stop)

    monkeypatch.setattr(qa, "greedy_continuations", spy)
    greedy_answers(model, tok, [GREEDY_PROMPTS[2], "hello", ""], max_new=6, max_len=16)
    assert seen["heads"] == [ids(tok, GREEDY_PROMPTS[2])[-10:], ids(tok, "hello"), [102]]
    assert seen["lengths"] == [6, 6, 6] and seen["pad_id"] == tok.pad_token_id
    assert eos_id(tok) in seen["stop"]


def test_greedy_answers_errors(loaded) -> None:
    model, tok = loaded
    for max_new, max_len in ((0, 16), (16, 16), (20, 16), (-1, 16)):
        with pytest.raises(ValueError, match=f"max_new={max_new}, max_len={max_len}"):
            greedy_answers(model, tok, ["hello"], max_new=max_new, max_len=max_len)
