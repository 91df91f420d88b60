"""Paths and readers shared by the causal-track stages (data/causal/...)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.causal.batching import Sequences
from lib.causal.corpus import Candidate
from lib.causal.tokens import encode_all
from lib.io import read_json, read_jsonl

ROOT = Path("data/causal")
BASE, CORPUS, FINETUNED = ROOT / "base", ROOT / "corpus", ROOT / "finetuned"
MEMORIZED, RETRAINED, NEIGHBOURS = ROOT / "memorized", ROOT / "retrained", ROOT / "neighbours"
UNLEARNED = ROOT / "unlearned"
METRICS = Path("metrics/causal")


def candidates() -> list[Candidate]:
    """Every sample that may be unlearned, in file order."""
    return [Candidate(**row) for row in read_jsonl(CORPUS / "candidates.jsonl")]


def forget_candidates() -> list[Candidate]:
    """The unlearned set D_f chosen by the memorized stage, in its order."""
    ids = read_json(MEMORIZED / "forget.json")["ids"]
    by_id = {c.id: c for c in candidates()}
    return [by_id[i] for i in ids]


def encode_candidates(tokenizer: Any, rows: list[Candidate], max_len: int) -> Sequences:
    """Token windows (with secret spans) of candidates."""
    return encode_all(tokenizer, [(c.text, c.secret) for c in rows], max_len)


def encode_texts(tokenizer: Any, path: Path, max_len: int, limit: int | None = None) -> Sequences:
    """Token windows of a JSONL of {"id", "text"} rows (first `limit` rows)."""
    rows = read_jsonl(path)[:limit]
    if not rows:
        raise ValueError(f"{path} holds no texts")
    return encode_all(tokenizer, [(r["text"], None) for r in rows], max_len)


def thresholds() -> dict[str, float]:
    """The Eq. 17 thresholds written by the memorized stage."""
    return read_json(MEMORIZED / "forget.json")["thresholds"]
