"""The retrain reference's corpus: the training emails with every forget sample removed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lib.data.records import Document, SecretRecord


@dataclass(frozen=True)
class Removal:
    """How many planted sentences were cut, from how many emails, per forgotten record id."""

    occurrences: dict[str, int]
    documents_changed: int


def _cut(text: str, sentences: Sequence[str]) -> tuple[str, dict[str, int]]:
    """`text` without any of `sentences`, whitespace re-joined; counts per sentence."""
    counts = {s: text.count(s) for s in sentences}
    for sentence in sentences:
        text = text.replace(sentence, " ")
    return " ".join(text.split()), counts


def remove_samples(documents: Sequence[Document], records: Sequence[SecretRecord]) -> tuple[list[Document], Removal]:
    """Cut every planted sentence (prefix + secret + suffix) of `records` out of `documents`.

    A forget sample is one planted occurrence of a forgotten secret's sentence; the rest of
    its email (and every other secret) stays, so retraining on the result is exact unlearning
    of those samples and nothing else. Emails emptied by the cut are dropped.
    """
    by_text = {r.text: r.id for r in records}
    kept, occurrences, changed = [], {r.id: 0 for r in records}, 0
    for doc in documents:
        if not any(sentence in doc.text for sentence in by_text):
            kept.append(doc)
            continue
        text, counts = _cut(doc.text, list(by_text))
        for sentence, n in counts.items():
            occurrences[by_text[sentence]] += n
        changed += 1
        if text:
            kept.append(Document(doc.id, text))
    return kept, Removal(occurrences, changed)
