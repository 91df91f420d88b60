"""The record types every stage exchanges: planted secrets and their never-seen controls."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lib.core.io import read_json, read_jsonl

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

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "SecretRecord":
        """Validate and build from a JSONL row."""
        missing = {f for f in cls.__dataclass_fields__} - set(row)
        if missing:
            raise ValueError(f"secret record {row.get('id', '?')} lacks fields {sorted(missing)}")
        if row["category"] not in CATEGORIES:
            raise ValueError(f"secret record {row['id']}: category {row['category']!r} not in {CATEGORIES}")
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Document:
    """One training or validation text (one email)."""

    id: str
    text: str


_RECORD_TYPES = {
    "id": str, "category": str, "prefix": str, "secret": str, "suffix": str, "repetitions": int, "is_control": bool,
}


def _record_from_row(row: Any) -> SecretRecord:
    """Build a SecretRecord from a JSON row, checking each field's type."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    record = SecretRecord.from_dict(row)
    for name, kind in _RECORD_TYPES.items():
        value = getattr(record, name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"field {name}={value!r} must be {kind.__name__}")
    return record


def read_secrets(path: str | Path) -> list[SecretRecord]:
    """Read secrets.jsonl or controls.jsonl; errors name the file and row."""
    records = []
    for number, row in enumerate(read_jsonl(path), start=1):
        try:
            records.append(_record_from_row(row))
        except ValueError as err:
            raise ValueError(f"malformed secret record in {path} row {number}: {err}") from None
    return records


def read_documents(path: str | Path) -> list[Document]:
    """Read train.jsonl or valid.jsonl rows {"id", "text"}; errors name the file and row."""
    documents = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str):
            raise ValueError(f"malformed document in {path} row {number}: need string fields 'id' and 'text'")
        documents.append(Document(row["id"], row["text"]))
    return documents


def memorized_records(memorized: str | Path, secrets: str | Path, category: str) -> list[SecretRecord]:
    """The memorized secrets of a category (ids in `memorized`, a {category: [ids]} JSON), most memorized first."""
    ids = read_json(memorized).get(category, [])
    if not ids:
        raise ValueError(f"memorized set of {category} is empty: nothing to unlearn (see metrics/memorized.json)")
    by_id = {s.id: s for s in read_secrets(secrets)}
    return [by_id[i] for i in ids]


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


def read_candidates(path: str | Path) -> list[Candidate]:
    """Every candidate of the causal corpus (candidates.jsonl), in file order."""
    return [Candidate(**row) for row in read_jsonl(path)]


def forget_candidates(candidates: str | Path, forget: str | Path) -> list[Candidate]:
    """The unlearned set D_f chosen by the memorized stage (forget.json's ids), in its order."""
    by_id = {c.id: c for c in read_candidates(candidates)}
    return [by_id[i] for i in read_json(forget)["ids"]]


def without(train: Sequence[tuple[str, str, int]], ids: set[str]) -> list[tuple[str, str, int]]:
    """The training text minus every copy of the samples in `ids` (the retrain reference's corpus)."""
    missing = ids - {i for i, _, _ in train}
    if missing:
        raise ValueError(f"forget ids not in the training text: {sorted(missing)[:3]}")
    return [row for row in train if row[0] not in ids]
