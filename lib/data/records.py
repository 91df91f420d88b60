"""The record types every stage exchanges: planted secrets and their never-seen controls."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lib.core.io import InputError, json_kind, read_json, read_records

CATEGORIES = ("TEL", "NAME", "RANDOM")


@dataclass(frozen=True)
class SecretRecord:
    """A private item with the context used to score it: text = prefix + secret + suffix."""

    id: str  # "TEL-0007"; controls "CTRL-TEL-0007"
    category: str  # one of CATEGORIES
    prefix: str  # evaluation context before the secret (ends with a space)
    secret: str  # the private string exactly as it appears in training text
    suffix: str  # context after the secret (starts with a space or punctuation)
    repetitions: int  # times the sentence prefix+secret+suffix occurs in training text; 0 for controls
    is_control: bool

    @property
    def text(self) -> str:
        """The full scoring sentence."""
        return self.prefix + self.secret + self.suffix

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSONL."""
        return asdict(self)


@dataclass(frozen=True)
class Document:
    """One training or validation text (one email)."""

    id: str
    text: str


_RECORD_TYPES = {
    "id": (str,), "category": (str,), "prefix": (str,), "secret": (str,), "suffix": (str,), "repetitions": (int,),
    "is_control": (bool,),
}


def read_secrets(path: str | Path) -> list[SecretRecord]:
    """Read secrets.jsonl or controls.jsonl; errors name the file, line and field, never a secret."""
    return [SecretRecord(**row) for row in read_records(path, _RECORD_TYPES, choices={"category": CATEGORIES})]


def read_documents(path: str | Path) -> list[Document]:
    """Read train.jsonl or valid.jsonl rows {"id", "text"}; errors name the file, line and field."""
    return [Document(row["id"], row["text"]) for row in read_records(path, {"id": (str,), "text": (str,)})]


def memorized_records(memorized: str | Path, secrets: str | Path, category: str) -> list[SecretRecord]:
    """The memorized secrets of a category (ids in `memorized`, a {category: [ids]} JSON), most memorized first."""
    raw = read_json(memorized)
    if not isinstance(raw, dict):
        raise InputError(f"{memorized}: {json_kind(raw)}; allowed: an object mapping each category to a list of ids")
    ids = raw.get(category, [])
    if not ids:
        raise ValueError(f"memorized set of {category} is empty: nothing to unlearn (see metrics/memorized.json)")
    by_id = {s.id: s for s in read_secrets(secrets)}
    return [by_id[i] for i in _known_ids(ids, set(by_id), memorized, repr(category))]


@dataclass(frozen=True)
class PipelineConfig:
    """The masked-LM track's `pipeline` section: the methods it compares and the categories it forgets."""

    methods: tuple[str, ...]
    categories: tuple[str, ...] = CATEGORIES

    def __post_init__(self) -> None:
        """Known categories, each once; at least one method and one category."""
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad:
            raise ValueError(f"categories contains {bad}; allowed: {list(CATEGORIES)}")
        if not self.categories or len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories={list(self.categories)}; allowed: distinct entries of {list(CATEGORIES)}")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods={list(self.methods)}; allowed: distinct registered method names, at least one")


@dataclass(frozen=True)
class Candidate:
    """One sample that may be unlearned: its text and, when known, the private string inside it."""

    id: str
    text: str
    secret: str | None  # must occur in text when given
    category: str | None
    copies: int  # times it occurs in the training text (0 when it came from a pretraining dump)


_CANDIDATE = {"id": (str,), "text": (str,), "secret": (str, type(None)), "category": (str, type(None)),
              "copies": (int,)}


def read_candidates(path: str | Path) -> list[Candidate]:
    """Every candidate of the causal corpus (candidates.jsonl), in file order; InputError naming a bad line."""
    return [Candidate(**row) for row in read_records(path, _CANDIDATE)]


def _known_ids(ids: Any, known: set[str], path: str | Path, what: str) -> list[str]:
    """ids, checked to be a list of strings each in `known`; InputError naming the file and the first bad entry."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError(f"{path}: {what} is {json_kind(ids)}; allowed: a list of id strings")
    unknown = [n for n, i in enumerate(ids) if i not in known]
    if unknown:
        raise InputError(f"{path}: {what} entry {unknown[0]} is not a known id ({len(unknown)} unknown); "
                         "allowed: ids of the stage's inputs (rerun the stage that wrote it)")
    return ids


def forget_candidates(candidates: str | Path, forget: str | Path) -> list[Candidate]:
    """The unlearned set D_f chosen by the memorized stage (forget.json's ids), in its order."""
    by_id = {c.id: c for c in read_candidates(candidates)}
    raw = read_json(forget)
    ids = _known_ids(raw.get("ids") if isinstance(raw, dict) else None, set(by_id), forget, "'ids'")
    return [by_id[i] for i in ids]


def without(train: Sequence[tuple[str, str, int]], ids: set[str]) -> list[tuple[str, str, int]]:
    """The training text minus every copy of the samples in `ids` (the retrain reference's corpus)."""
    missing = ids - {i for i, _, _ in train}
    if missing:
        raise ValueError(f"forget ids not in the training text: {sorted(missing)[:3]}")
    return [row for row in train if row[0] not in ids]
