"""Memorization scores of causal LMs: n-gram overlap, batched greedy decoding, EL_n, secret spans, thresholds."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch import nn

from lib.families.causal import accuracy, of
from lib.families.memorization import (MemorizationScores, exact_extraction, extraction_likelihood,
                                       greedy_continuations, ngram_overlap, own_continuations, score_memorization,
                                       span_extraction,
                                       thresholds_from)
from tests.tiny_models import VOCAB, tiny_gpt2, tiny_gpt_neo, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


def sharp(model: nn.Module, seed: int = 0) -> nn.Module:
    """float64 copy with large random weights: greedy outputs vary with position and context (default init repeats)."""
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return model


def loop_greedy(model: nn.Module, prefix: list[int], k: int) -> list[int]:
    """Reference: one prefix at a time, no padding, no cache, full forward per new token."""
    seq = list(prefix)
    with torch.no_grad():
        for _ in range(k):
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prefix):]


def loop_overlap(pred: list[int], label: list[int], n: int) -> float:
    """Reference Overlap_n written out directly."""
    truth = {tuple(label[i:i + n]) for i in range(len(label) - n + 1)}
    guess = {tuple(pred[i:i + n]) for i in range(len(pred) - n + 1)}
    return len(truth & guess) / len(truth)


def random_tokens(gen: torch.Generator, length: int) -> list[int]:
    """Token ids outside the special ids 0..2."""
    return torch.randint(3, VOCAB, (length,), generator=gen).tolist()


# ---------------------------------------------------------------- ngram_overlap

def test_ngram_overlap_full_none_partial() -> None:
    label = [1, 2, 3, 4, 5]
    assert ngram_overlap(label, label, 2) == 1.0
    assert ngram_overlap([9, 8, 7, 6, 5], label, 2) == 0.0
    assert ngram_overlap([1, 2, 3, 9, 9], label, 2) == 0.5  # (1,2), (2,3) of 4 bigrams
    assert ngram_overlap([3, 4, 5], label, 3) == pytest.approx(1 / 3)
    assert ngram_overlap([1], label, 2) == 0.0  # a prediction too short has no n-gram


def test_ngram_overlap_counts_distinct_label_ngrams() -> None:
    assert ngram_overlap([1, 1], [1, 1, 1, 1], 2) == 1.0  # {(1, 1)} only
    assert ngram_overlap([2, 1, 1], [1, 1, 2, 1], 2) == pytest.approx(2 / 3)  # {(1,1),(1,2),(2,1)}


def test_ngram_overlap_rejects_short_label_and_bad_n() -> None:
    with pytest.raises(ValueError, match=r"label has 2 tokens, fewer than n=3.*prediction has 4"):
        ngram_overlap([1, 2, 3, 4], [1, 2], 3)
    with pytest.raises(ValueError, match="n=0"):
        ngram_overlap([1], [1], 0)


# ---------------------------------------------------------------- greedy decoding

@pytest.mark.parametrize("build", [tiny_gpt2, tiny_gpt_neo, tiny_llama], ids=["gpt2", "gpt_neo", "llama"])
def test_batched_greedy_equals_unbatched_loop(build) -> None:
    model = sharp(build())
    gen = torch.Generator().manual_seed(1)
    # prefixes of 1..11 tokens plus up to 9 new ones: longer than GPT-Neo's local window of 4, with left padding
    prefixes = [random_tokens(gen, int(n)) for n in torch.randint(1, 12, (14,), generator=gen)]
    lengths = torch.randint(0, 10, (14,), generator=gen).tolist()
    got = greedy_continuations(model, prefixes, lengths, pad_id=0, batch_size=5)
    expected = [loop_greedy(model, p, k) for p, k in zip(prefixes, lengths)]
    assert got == expected
    assert [len(row) for row in got] == lengths
    assert len({tuple(row) for row in expected if row}) > 5  # the outputs differ enough to catch a mistake


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_greedy_with_stop_tokens_ends_early_and_agrees_up_to_the_stop(build) -> None:
    """With stop tokens a batch ends once each row has produced one: every row agrees with the full decode up to
    and including its first stop token, and fewer tokens are decoded in all."""
    model = sharp(build())
    gen = torch.Generator().manual_seed(2)
    prefixes = [random_tokens(gen, int(n)) for n in torch.randint(1, 12, (12,), generator=gen)]
    lengths = [9] * len(prefixes)
    full = greedy_continuations(model, prefixes, lengths, pad_id=0, batch_size=4)
    counts = Counter(t for row in full for t in row)
    stop = {t for t, _ in counts.most_common(3)}
    got = greedy_continuations(model, prefixes, lengths, pad_id=0, batch_size=4, stop=stop)

    def upto(row: list[int]) -> list[int]:
        """The row up to and including its first stop token (all of it when it has none)."""
        return next((row[: i + 1] for i, t in enumerate(row) if t in stop), row)

    assert [upto(row) for row in got] == [upto(row) for row in full]
    assert all(len(row) <= 9 for row in got) and sum(map(len, got)) < sum(map(len, full))


def test_greedy_rejects_bad_requests() -> None:
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="prefix 1 is empty"):
        greedy_continuations(model, [[3], []], [1, 1], pad_id=0)
    with pytest.raises(ValueError, match="2 prefixes but 1 lengths"):
        greedy_continuations(model, [[3], [4]], [1], pad_id=0)
    with pytest.raises(ValueError, match="length -1"):
        greedy_continuations(model, [[3]], [-1], pad_id=0)


# ---------------------------------------------------------------- EL_n

def loop_el(model: nn.Module, row: list[int], n: int, max_new: int | None) -> float:
    """Reference Eq. 16: average over prefix lengths t = 1..T-n of Overlap_n(greedy, true suffix)."""
    scores = []
    for t in range(1, len(row) - n + 1):
        label = row[t:] if max_new is None else row[t:t + max_new]
        scores.append(loop_overlap(loop_greedy(model, row[:t], len(label)), label, n))
    return sum(scores) / len(scores)


@pytest.fixture(scope="module")
def neo_and_rows() -> tuple[nn.Module, list[list[int]]]:
    """Sharpened tiny GPT-Neo and rows: one is its own greedy output after 3 tokens (memorized), one random."""
    model = sharp(tiny_gpt_neo(), seed=2)
    gen = torch.Generator().manual_seed(3)
    start = random_tokens(gen, 3)
    memorized = start + loop_greedy(model, start, 9)
    return model, [memorized, random_tokens(gen, 9), random_tokens(gen, 7)]


@pytest.mark.parametrize("max_new", [None, 4])
def test_el_equals_per_prefix_loop(neo_and_rows, max_new) -> None:
    model, rows = neo_and_rows
    got = extraction_likelihood(model, of(rows), pad_id=0, n=3, max_new=max_new, batch_size=4)
    expected = torch.tensor([loop_el(model, r, 3, max_new) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # every prefix of at least the 3 seed tokens continues exactly: t = 3..9 of t = 1..9 score 1
    assert got[0] >= 7 / 9
    assert got[1] < got[0]


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_gpt_neo, tiny_llama], ids=["gpt2", "gpt_neo", "llama"])
def test_own_continuations_equal_per_prefix_loop(build) -> None:
    model = sharp(build(), seed=4)
    gen = torch.Generator().manual_seed(5)
    start = random_tokens(gen, 2)
    own = start + loop_greedy(model, start, 10)
    broken = own[:6] + [(own[6] % (VOCAB - 3)) + 3] + own[7:]  # memorized, one wrong token in the middle
    seqs = of([own, broken, random_tokens(gen, 12), random_tokens(gen, 5)])
    requests = [(i, t, end) for i, row in enumerate(seqs.ids) for t in range(1, len(row) + 1)
                for end in sorted({t, min(len(row), t + 3), len(row)})]
    got = own_continuations(model, seqs, pad_id=0, requests=requests, batch_size=3)
    assert got == [loop_greedy(model, list(seqs.ids[i][:t]), end - t) for i, t, end in requests]
    assert any(g != list(seqs.ids[i][t:end]) for g, (i, t, end) in zip(got, requests))  # not all true suffixes


def test_decode_batch_size_changes_no_continuation(neo_and_rows) -> None:
    model, rows = neo_and_rows
    seqs = of(rows)
    requests = [(i, t, len(row)) for i, row in enumerate(rows) for t in range(1, len(row))]
    one = own_continuations(model, seqs, 0, requests, batch_size=2, decode_batch_size=1)
    assert own_continuations(model, seqs, 0, requests, batch_size=2, decode_batch_size=7) == one
    assert score_memorization(model, seqs, 0, n=3, decode_batch_size=5).el == extraction_likelihood(model, seqs, 0, 3).tolist()


def test_memorized_sample_costs_one_forward(neo_and_rows) -> None:
    model, rows = neo_and_rows
    own = rows[0][:1] + loop_greedy(model, rows[0][:1], 10)  # the model's greedy text from its first token
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        got = extraction_likelihood(model, of([own, own]), pad_id=0, n=3)
    finally:
        handle.remove()
    assert got.tolist() == [1.0, 1.0] and len(calls) == 1  # no decode: every prefix continues the true tokens
    with pytest.raises(ValueError, match=r"request \(0, 0, 2\) needs 1 <= t <= end <= 11"):
        own_continuations(model, of([own]), 0, [(0, 0, 2)])


def test_el_rejects_short_rows_and_small_max_new() -> None:
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="sequence 0 has 3 tokens; EL_3 needs at least 4"):
        extraction_likelihood(model, of([[3, 4, 5]]), pad_id=0, n=3)
    with pytest.raises(ValueError, match="max_new=2"):
        extraction_likelihood(model, of([[3, 4, 5, 6, 7]]), pad_id=0, n=3, max_new=2)


# ---------------------------------------------------------------- secret spans

def test_span_metrics_on_given_spans(neo_and_rows) -> None:
    model, rows = neo_and_rows
    memorized = rows[0]
    altered = memorized[:-1] + [(memorized[-1] % (VOCAB - 3)) + 3]  # last secret token no longer the greedy one
    assert altered[-1] != memorized[-1]
    seqs = of([memorized, altered, rows[1], rows[2]], [(7, 12), (7, 12), (2, 5), None])
    el = span_extraction(model, seqs, pad_id=0, n=2, batch_size=3)
    exact = exact_extraction(model, seqs, pad_id=0, batch_size=3)
    assert el[0] == 1.0 and exact[0] == 1.0
    assert el[1] == 0.75 and exact[1] == 0.0  # 3 of the secret's 4 bigrams come out, not the whole secret
    pred = loop_greedy(model, rows[1][:2], 3)
    assert el[2] == loop_overlap(pred, rows[1][2:5], 2)
    assert exact[2] == float(pred == rows[1][2:5])
    assert math.isnan(el[3]) and math.isnan(exact[3])
    # n' = min(n, span length): with n=10 the 5-token span is scored on its one 5-gram
    el10 = span_extraction(model, seqs, pad_id=0, n=10)
    assert el10[0] == 1.0 and el10[1] == 0.0


def test_score_memorization_and_thresholds(neo_and_rows) -> None:
    model, rows = neo_and_rows
    seqs = of(rows, [(7, 12), None, (3, 6)])
    scores = score_memorization(model, seqs, pad_id=0, n=3, el=True, max_new=None, batch_size=2)
    assert scores.ma == accuracy(model, seqs, 0).tolist()
    assert scores.el == extraction_likelihood(model, seqs, 0, n=3).tolist()
    assert scores.span_exact[0] == 1.0 and math.isnan(scores.span_exact[1])
    assert scores.span_el[0] == 1.0 and math.isnan(scores.span_el[1]) and math.isnan(scores.span_ma[1])
    assert scores.span_ma[0] == 1.0  # teacher forcing on its own greedy output
    ma, el = thresholds_from(scores)
    assert ma == pytest.approx(sum(scores.ma) / 3) and el == pytest.approx(sum(scores.el) / 3)
    assert score_memorization(model, seqs, pad_id=0, n=3, el=False).el is None


def test_thresholds_reject_missing_or_nan() -> None:
    base = dict(span_ma=[math.nan], span_el=[math.nan], span_exact=[math.nan])
    assert thresholds_from(MemorizationScores(ma=[0.2, 0.4], el=[0.0, 0.1], **base)) == pytest.approx((0.3, 0.05))
    with pytest.raises(ValueError, match="el contains NaN"):
        thresholds_from(MemorizationScores(ma=[0.2], el=[math.nan], **base))
    with pytest.raises(ValueError, match="no EL"):
        thresholds_from(MemorizationScores(ma=[0.2], el=None, **base))
    with pytest.raises(ValueError, match="no validation samples"):
        thresholds_from(MemorizationScores(ma=[], el=[], **base))
