"""The record types every stage exchanges: planted secrets and their never-seen controls."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
