"""Causal-track text: generated corpus, JSONL and TDEC loaders, Shakespeare passages, the retrain corpus."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lib.data.emails import GeneratedConfig, causal_text, generate, public_domain_text, read_jsonl_candidates, read_tdec
from lib.data.records import without

SMALL = GeneratedConfig(seed=0, n_background_emails=40, secrets_per_category={"TEL": 2, "NAME": 2, "RANDOM": 1},
                        copies=(2, 3), valid_fraction=0.2)
SPACED_DIGITS = re.compile(r"\d \d")


@pytest.fixture(scope="module")
def corpus():
    """The small generated corpus, built once for the module."""
    return generate(SMALL)


@pytest.fixture(scope="module")
def minilm():
    """The embedded MiniLM tokenizer (offline)."""
    from transformers import AutoTokenizer

    from lib.core.models import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("embedded:minilm"))


# ---------------------------------------------------------------- generate

def test_candidates_hold_their_secret_and_cycle_copies(corpus) -> None:
    assert [c.category for c in corpus.candidates].count("TEL") == 2
    assert len(corpus.candidates) == 5
    for i, cand in enumerate(corpus.candidates):
        assert cand.secret and cand.secret in cand.text
        assert cand.copies == SMALL.copies[i % 2]
    assert [c.copies for c in corpus.candidates] == [2, 3, 2, 3, 2]


def test_each_candidate_trained_once_with_its_copies(corpus) -> None:
    for cand in corpus.candidates:
        rows = [row for row in corpus.train if row[0] == cand.id]
        assert rows == [(cand.id, cand.text, cand.copies)]
        assert sum(text == cand.text for _, text, _ in corpus.train) == 1
    ids = [i for i, _, _ in corpus.train]
    assert len(ids) == len(set(ids))


def test_background_emails_hold_no_secret(corpus) -> None:
    cand_ids = {c.id for c in corpus.candidates}
    background = [(text, n) for i, text, n in corpus.train if i not in cand_ids]
    assert background and all(n == 1 for _, n in background)
    for cand in corpus.candidates:
        assert not any(cand.secret in text for text, _ in background), cand.id


def test_held_out_emails_are_never_trained(corpus) -> None:
    trained = {text for _, text, _ in corpus.train}
    assert corpus.valid
    assert not [text for _, text in corpus.valid if text in trained]
    assert not {i for i, _ in corpus.valid} & {i for i, _, _ in corpus.train}


def test_digits_are_joined(corpus) -> None:
    texts = [t for _, t, _ in corpus.train] + [t for _, t in corpus.valid] + [c.secret for c in corpus.candidates]
    assert not [t for t in texts if SPACED_DIGITS.search(t)]
    tel = [c for c in corpus.candidates if c.category == "TEL"]
    assert all(re.fullmatch(r"\d{6,}", c.secret) for c in tel)
    assert causal_text("call 9 8 8 - 1 2 at 7 pm") == "call 988 - 12 at 7 pm"


def test_generate_is_deterministic(corpus) -> None:
    assert generate(SMALL) == corpus
    other = generate(GeneratedConfig(**{**SMALL.__dict__, "seed": 1}))
    assert [c.secret for c in other.candidates] != [c.secret for c in corpus.candidates]


@pytest.mark.parametrize("copies", [(), (0,), (2, -1)])
def test_invalid_copies(copies) -> None:
    with pytest.raises(ValueError, match="copies"):
        generate(GeneratedConfig(**{**SMALL.__dict__, "copies": copies}))


# ---------------------------------------------------------------- without

def test_without_removes_exactly_the_ids() -> None:
    train = [("a", "x", 1), ("b", "y", 3), ("c", "z", 2), ("a2", "x", 1)]
    assert without(train, {"b", "a"}) == [("c", "z", 2), ("a2", "x", 1)]
    assert without(train, set()) == train
    with pytest.raises(ValueError, match="'nope'"):
        without(train, {"a", "nope"})


# ---------------------------------------------------------------- JSONL

def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON value (or raw line when a string) per line."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_jsonl_valid_rows_default_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "call me at 555", "secret": "555", "category": "TEL"},
                                             "", {"id": 7, "text": "plain text"}, {"text": "third row"}])
    cands = read_jsonl_candidates(path)
    assert [c.id for c in cands] == ["jsonl-00001", "7", "jsonl-00004"]
    assert [c.secret for c in cands] == ["555", None, None]
    assert cands[0].category == "TEL" and cands[1].category is None
    assert all(c.copies == 0 for c in cands)


@pytest.mark.parametrize("bad", [{"id": "x"}, {"text": ""}, {"text": "   "}, {"text": 3}, ["text"]])
def test_jsonl_missing_or_empty_text_names_the_line(tmp_path: Path, bad) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "fine"}, bad])
    with pytest.raises(ValueError, match=r"c\.jsonl line 2: .*'text'"):
        read_jsonl_candidates(path)


def test_jsonl_secret_must_occur(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "call me at 555", "secret": "556"}])
    with pytest.raises(ValueError, match=r"c\.jsonl line 1: 'secret' does not occur"):
        read_jsonl_candidates(path)


def test_jsonl_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.jsonl holds no rows"):
        read_jsonl_candidates(path)


def test_jsonl_malformed_line_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "fine"}, {"text": "fine too"}, '{"text": "unclosed'])
    with pytest.raises(ValueError) as err:
        read_jsonl_candidates(path)
    assert "c.jsonl line 3" in str(err.value)


# ---------------------------------------------------------------- TDEC

PRE = np.array([[7592, 2088, 1010], [1996, 4248, 2829], [2023, 2003, 1037]], dtype=np.int64)
SUF = np.array([[2655, 2033, 2012], [4419, 14523, 2058], [3231, 6251, 1012]], dtype=np.int64)


def save(folder: Path, **arrays) -> Path:
    """Write named .npy arrays into `folder`."""
    folder.mkdir(exist_ok=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=array.dtype == object)
    return folder


def test_tdec_prefix_suffix_pairs(tmp_path: Path, minilm) -> None:
    folder = save(tmp_path / "tdec", train_prefix=PRE, train_suffix=SUF.astype(np.uint16))
    cands = read_tdec(folder, minilm)
    assert [c.id for c in cands] == ["tdec-00000", "tdec-00001", "tdec-00002"]
    for cand, p, s in zip(cands, PRE, SUF):
        assert cand.secret == minilm.decode(s.tolist())
        assert cand.text == minilm.decode(p.tolist()) + minilm.decode(s.tolist())
        assert cand.text.endswith(cand.secret) and cand.copies == 0
    assert cands[0].text == "hello world,call me at"
    assert len(read_tdec(folder, minilm, limit=2)) == 2


def test_tdec_whole_dataset_and_split(tmp_path: Path, minilm) -> None:
    folder = save(tmp_path / "tdec", valid_dataset=np.concatenate([PRE, SUF], axis=1).astype(np.int32))
    cands = read_tdec(folder, minilm, split="valid")
    assert [c.secret for c in cands] == [None, None, None]
    assert cands[0].text == minilm.decode(PRE[0].tolist() + SUF[0].tolist())
    with pytest.raises(ValueError, match="train_prefix.npy"):
        read_tdec(folder, minilm)  # split train is absent


def test_tdec_mismatched_rows(tmp_path: Path, minilm) -> None:
    folder = save(tmp_path / "tdec", train_prefix=PRE, train_suffix=SUF[:2])
    with pytest.raises(ValueError, match="3 rows .* 2"):
        read_tdec(folder, minilm)


@pytest.mark.parametrize("array", [PRE[0], PRE.astype(np.float32), PRE[None]])
def test_tdec_rejects_non_2d_integer_arrays(tmp_path: Path, minilm, array) -> None:
    folder = save(tmp_path / "tdec", train_prefix=array, train_suffix=SUF)
    with pytest.raises(ValueError, match="2-D integer token array"):
        read_tdec(folder, minilm)


class Trap:
    """Unpickling this object creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_tdec_never_unpickles(tmp_path: Path, minilm) -> None:
    marker = tmp_path / "unpickled"
    array = np.empty((1, 1), dtype=object)
    array[0, 0] = Trap(str(marker))
    folder = save(tmp_path / "tdec", train_dataset=array)
    with pytest.raises(ValueError):
        read_tdec(folder, minilm)
    assert not marker.exists()


def test_tdec_missing_files(tmp_path: Path, minilm) -> None:
    folder = save(tmp_path / "tdec", train_prefix=PRE)  # suffix missing, no dataset
    with pytest.raises(ValueError, match="neither"):
        read_tdec(folder, minilm)
    with pytest.raises(FileNotFoundError, match="nowhere not found"):
        read_tdec(tmp_path / "nowhere", minilm)


# ---------------------------------------------------------------- public-domain text

def test_public_passages_have_exact_length_and_are_seeded() -> None:
    first = public_domain_text(12, 17, seed=3)
    assert len(first) == 12 and len({i for i, _ in first}) == 12
    assert all(len(text.split()) == 17 for _, text in first)
    assert public_domain_text(12, 17, seed=3) == first
    assert public_domain_text(12, 17, seed=4) != first
    for _, text in first:
        assert "**" not in text and not text.lstrip().startswith("#")


def test_public_passages_too_many() -> None:
    with pytest.raises(ValueError, match="n_samples=10000000 exceeds"):
        public_domain_text(10_000_000, 40, seed=0)


def _available(words: int) -> int:
    """How many passages of `words` words exist (read off the too-many error)."""
    with pytest.raises(ValueError) as err:
        public_domain_text(10_000_000, words, seed=0)
    return int(re.search(r"the (\d+) passages", str(err.value)).group(1))


def test_public_passages_hold_no_stage_markup() -> None:
    """Across every passage: no speaker tags, headings, stage-direction underscores or markdown escapes."""
    everything = public_domain_text(_available(400), 400, seed=0)
    markup = re.compile(r"\*\*|(^|\s)#|_|\\")
    leaked = [t[max(m.start() - 60, 0) : m.end() + 20] for _, t in everything if (m := markup.search(t))]
    assert not leaked, f"{len(leaked)} of {len(everything)} passages leak markup, e.g. {leaked[:3]}"
