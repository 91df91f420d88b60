"""Model-level scoring of (prompt, answer) pairs: encoding with answer spans, answer log-probabilities, greedy answers.

The answer is appended to its prompt as " " + answer + eos; the answer tokens (eos included) are the span of the
resulting Sequences, so the causal-LM methods' span-aware code and the benchmarks' answer-only scores read the
same tokens. Prompts longer than the budget are cut from the left (the answer is what is scored).
"""
from __future__ import annotations

from pathlib import Path
import weakref
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from lib.core.io import InputError, read_records
from lib.families.causal import Sequences, batches, pad, token_nll
from lib.families.memorization import greedy_continuations


def _ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_id(tokenizer: Any) -> int:
    """The end-of-answer token: eos, else sep (word-piece tokenizers); ValueError when the tokenizer has neither."""
    for value in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if value is not None:
            return int(value)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos or sep token; allowed: one with either")


def _pair(tokenizer: Any, prompt: str, answer: str, max_len: int) -> tuple[list[int], tuple[int, int]]:
    """Ids of prompt + " " + answer + eos and the answer span, within max_len tokens."""
    eos = eos_id(tokenizer)
    head, tail = _ids(tokenizer, prompt), _ids(tokenizer, " " + answer) + [eos]
    tail = tail[: max_len - 1]  # at least one prompt token conditions the answer
    head = head[max(0, len(head) - (max_len - len(tail))):] or [eos]
    return head + tail, (len(head), len(head) + len(tail))


def encode_pairs(tokenizer: Any, prompts: Sequence[str], answers: Sequence[str], max_len: int) -> Sequences:
    """Sequences of prompt + answer with the answer tokens as each row's span."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers; one answer per prompt is needed")
    if max_len < 3:
        raise ValueError(f"max_len={max_len} invalid; allowed: an integer >= 3")
    rows = [_pair(tokenizer, p, a, max_len) for p, a in zip(prompts, answers)]
    return Sequences(tuple(tuple(ids) for ids, _ in rows), tuple(span for _, span in rows))


def span_logprob(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16) -> Tensor:
    """Mean log-probability per span token of each sequence (N,) float64, no gradient."""
    # equal lengths batched together: a batch is as long as its longest row, so sorting drops most padding
    order = sorted(range(len(seqs)), key=lambda i: len(seqs.ids[i]))
    out = torch.zeros(len(seqs), dtype=torch.float64)
    with torch.no_grad():
        for chunk in batches(len(order), batch_size):
            index = [order[c] for c in chunk]
            ids, mask = pad([seqs.ids[i] for i in index], pad_id)
            nll, _valid = token_nll(model, ids, mask)  # (B, T-1): position t-1 scores token t
            scored = torch.zeros_like(nll, dtype=torch.bool)
            for r, i in enumerate(index):
                start, end = seqs.spans[i]
                scored[r, start - 1 : end - 1] = True
            out[index] = (-(nll * scored).sum(1) / scored.sum(1)).double().cpu()
    return out


def answer_logprob(model: nn.Module, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str], max_len: int,
                   batch_size: int = 16) -> Tensor:
    """log P(answer | prompt)^(1/|answer|) per pair (N,): TOFU's length-normalised probability, in log space."""
    seqs = encode_pairs(tokenizer, prompts, answers, max_len)
    return span_logprob(model, seqs, tokenizer.pad_token_id, batch_size)


def _cut(tokenizer: Any, tokens: list[int]) -> str:
    """Decoded tokens up to the first eos, then up to the first newline, stripped."""
    eos = eos_id(tokenizer)
    if eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tokenizer.decode(tokens, skip_special_tokens=True).split("\n")[0].strip()


def greedy_answers(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new: int, max_len: int,
                   batch_size: int = 16) -> list[str]:
    """Greedy answer (max_new tokens, cut at eos / newline) to each prompt, left-cut to max_len - max_new tokens."""
    if max_new < 1 or max_len <= max_new:
        raise ValueError(f"max_new={max_new}, max_len={max_len} invalid; allowed: 1 <= max_new < max_len")
    heads = [(_ids(tokenizer, p) or [eos_id(tokenizer)])[-(max_len - max_new):] for p in prompts]
    tokens = greedy_continuations(model, heads, [max_new] * len(heads), tokenizer.pad_token_id, batch_size,
                                  stop=answer_stops(tokenizer))
    return [_cut(tokenizer, row) for row in tokens]


def answer_stops(tokenizer: Any) -> frozenset[int]:
    """The tokens an answer ends at (_cut): eos and every token whose text holds a newline."""
    if tokenizer not in _STOPS:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _STOPS[tokenizer] = frozenset([eos_id(tokenizer), *(i for i, t in enumerate(texts) if "\n" in t)])
    return _STOPS[tokenizer]


_STOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per tokenizer: decoding the vocabulary takes a moment


def read_pairs(path: Path) -> tuple[list[str], list[str]]:
    """(prompts, answers) of a JSONL of {"id", "prompt", "answer"} rows."""
    rows = read_records(path, {"prompt": (str,), "answer": (str,)})
    if not rows:
        raise InputError(f"{path} holds no question-answer rows; allowed: at least one row")
    return [r["prompt"] for r in rows], [r["answer"] for r in rows]


def encode_pairs_file(tokenizer: Any, path: Path, max_len: int) -> Sequences:
    """Sequences (answer spans) of a pairs file."""
    return encode_pairs(tokenizer, *read_pairs(path), max_len)
