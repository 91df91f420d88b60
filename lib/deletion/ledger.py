"""The deletion ledger: an append-only, hash-chained JSONL record of every request applied to a model.

Entry n holds its sequence number, the hash of entry n-1 (`prev`; 64 zeros for the first) and
`hash` = SHA-256(prev || canonical JSON of the entry without `hash`). Changing, removing or reordering
an entry breaks the chain at a point `verify` names. Entries carry digests, never private text: the
request's content digest, the patch file's digest, the parent and child model digests, metrics.

An entry is appended with one write of one whole line, flushed and fsynced; a line cut short by a kill is
reported by `verify` and dropped by `repair` (it was never acknowledged, so the request did not happen).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

GENESIS = "0" * 64
REQUIRED = ("request", "content_digest", "method", "params", "patch_digest", "parent", "child", "time")


def canonical(obj: Any) -> bytes:
    """The bytes an entry is hashed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, body: dict[str, Any]) -> str:
    """H(prev || canonical(body)), body being the entry without its `hash`."""
    return hashlib.sha256(prev.encode() + canonical(body)).hexdigest()


@dataclass(frozen=True)
class Problem:
    """Where the chain breaks: the 1-based line, and what is wrong there."""

    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, complete) of each non-empty line; complete=False for a last line without newline."""
    if not path.is_file():
        return
    data = path.read_bytes().decode("utf-8", errors="replace")
    parts = data.split("\n")
    for number, text in enumerate(parts, start=1):
        if text.strip():
            yield number, text, number < len(parts)


def read(path: str | Path) -> list[dict[str, Any]]:
    """Every complete entry, in file order (no checking: see verify)."""
    out = []
    for _, text, complete in _lines(Path(path)):
        if complete:
            out.append(json.loads(text))
    return out


def _parse(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    """(line, entry) of each well-formed line up to the first malformed one, and that line's problem."""
    entries: list[tuple[int, dict[str, Any]]] = []
    for number, text, complete in _lines(path):
        if not complete:
            return entries, [Problem(number, "cut short (an append that did not finish); `repair` drops it")]
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            return entries, [Problem(number, "not JSON: the entry was changed")]
        if not isinstance(entry, dict) or not {"hash", "seq", "prev"} <= set(entry) or not isinstance(entry["seq"], int):
            return entries, [Problem(number, "not a ledger entry (no integer seq, prev or hash)")]
        entries.append((number, entry))
    return entries, []


def _order(entries: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    """Removed (a seq missing), repeated and reordered entries (a seq out of increasing order)."""
    seqs = [entry["seq"] for _, entry in entries]
    problems = []
    for missing in sorted(set(range(max(seqs, default=-1) + 1)) - set(seqs)):
        line = next(n for n, entry in entries if entry["seq"] > missing)
        problems.append(Problem(line, f"seq {missing} is missing before this line: an entry was removed"))
    for i, (number, entry) in enumerate(entries):
        if seqs.count(entry["seq"]) > 1 and seqs.index(entry["seq"]) < i:
            problems.append(Problem(number, f"seq {entry['seq']} repeats an earlier entry"))
        elif (i and seqs[i - 1] > seqs[i]) or (i + 1 < len(seqs) and seqs[i] > seqs[i + 1]):
            problems.append(Problem(number, f"seq {entry['seq']} is out of order: entries were reordered"))
    return problems


def verify(path: str | Path, head: str | None = None) -> list[Problem]:
    """Every break in the chain: a changed entry (its hash), a removed, repeated or reordered one (seq), an
    entry that does not chain to the one before, a line cut short or not an entry, and, given the head hash
    recorded elsewhere, removed last entries. Empty when the ledger is whole."""
    return _checked(Path(path), head)[1]


def _checked(path: Path, head: str | None) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The entries read in one pass, and every problem `verify` reports."""
    entries, malformed = _parse(path)
    problems = _order(entries)
    hashes = {entry["seq"]: entry["hash"] for _, entry in entries}
    hashes[-1] = GENESIS
    prev = GENESIS
    for number, entry in entries:
        body = {k: v for k, v in entry.items() if k != "hash"}
        before = hashes.get(entry["seq"] - 1)  # None when that entry was removed: reported above
        if entry_hash(entry["prev"], body) != entry["hash"]:
            problems.append(Problem(number, f"entry seq {entry['seq']} was changed (its hash does not match)"))
        elif before is not None and entry["prev"] != before:
            problems.append(Problem(number, f"seq {entry['seq']} does not chain to seq {entry['seq'] - 1}"))
        prev = entry["hash"]
    if head is not None and prev != head:
        where = next((n for n, e in entries if e["hash"] == head), None)
        problems.append(Problem(entries[-1][0] if entries else 0, "the ledger does not end at the recorded head: "
                                + (f"entries were appended after line {where} without it" if where else
                                   "its last entries were removed or changed")))
    return [entry for _, entry in entries], sorted(problems, key=lambda p: p.line) + malformed


def append(path: str | Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Append one entry (fields must hold REQUIRED) chained to the last; returns it. The caller holds the lock."""
    missing = [k for k in REQUIRED if k not in fields]
    if missing or {"seq", "prev", "hash"} & set(fields):
        raise ValueError(f"ledger fields {sorted(fields)} invalid; required: {list(REQUIRED)}, "
                         "and no seq, prev or hash (the ledger sets them)")
    path = Path(path)
    entries, problems = _checked(path, None)  # one read: the chain is checked on the entries appended to
    if problems:
        raise ValueError(f"ledger {path} is broken ({problems[0]}); nothing appended")
    prev = entries[-1]["hash"] if entries else GENESIS
    body = {**fields, "seq": len(entries), "prev": prev}
    entry = {**body, "hash": entry_hash(prev, body)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:  # one write of one whole line: a kill leaves it whole or cut short
        handle.write(canonical(entry) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return entry


def repair(path: str | Path) -> bool:
    """Drop a last line cut short by a kill; True when something was dropped. Other breaks are left to a person."""
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as handle:
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    return True
