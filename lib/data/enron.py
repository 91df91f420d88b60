"""Loader for the CMU Enron maildir (maildir/<user>/<folder>/<n>.), prepared DEPN-style.

Each email becomes one line of body text: the RFC-822 header block and the header blocks of
forwarded or quoted messages are dropped, the characters - * # _ = are removed and whitespace
is collapsed. Lines holding exactly ten digits are rewritten as a phone-number template
sentence with space-separated digits, the format the TEL secrets use.
"""
from __future__ import annotations

import logging
import os
import random
import re
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from lib.data.corpus import TEL_TEMPLATES
from lib.data.records import Document

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:")
_BLOCK_MARKER = re.compile(r"^\s*-{2,}\s*(original message|forwarded by|forwarded message)", re.IGNORECASE)
# Lotus Notes quotes start with 'Name <addr> on 05/14/2001 03:25 PM' before To:/cc:/Subject:.
_ON_DATE = re.compile(r"\bon \d{1,2}/\d{1,2}/\d{2,4},? \d{1,2}:\d{2}")
_BLOCK_HEADER = re.compile(r"^\s*(from|sent|to|cc|bcc|date|subject)\s*:", re.IGNORECASE)
_SUBJECT = re.compile(r"^\s*subject\s*:", re.IGNORECASE)
_DROPPED_CHARS = re.compile(r"[-*#_=]")
_BLOCK_WINDOW = 15  # a quoted header block longer than this is not a header block


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting '2.' before '10.'."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", name) if part)


def _resolve_root(root: str | Path) -> Path:
    """The maildir folder itself: `root`, or `root/maildir` when that exists."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Enron maildir root {root} does not exist or is not a folder")
    return root / "maildir" if (root / "maildir").is_dir() else root


def iter_maildir(root: str | Path) -> Iterator[Path]:
    """Yield every email file under the maildir in a stable natural order (user, folder, number)."""
    top = _resolve_root(root)
    for folder, dirnames, filenames in os.walk(top):
        # Sorting in place makes os.walk descend in natural order too.
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=_natural_key)
        for name in sorted((f for f in filenames if not f.startswith(".")), key=_natural_key):
            yield Path(folder) / name


def _strip_rfc822_header(raw: str) -> str:
    """Drop the leading header block (up to the first blank line) when the text starts with one."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    if not _HEADER.match(text):
        return text
    _, _, body = text.partition("\n\n")
    return body


def _quoted_header_end(lines: list[str], start: int) -> int | None:
    """Index just past the Subject line of a quoted header block starting at `start`, if any."""
    for i in range(start + 1, min(start + _BLOCK_WINDOW, len(lines))):
        if _SUBJECT.match(lines[i]):
            return i + 1
    return None


def _starts_quoted_block(lines: list[str], i: int) -> bool:
    """A forward/original-message marker, or a Lotus 'X on <date>' line followed by To:/cc:."""
    if _BLOCK_MARKER.match(lines[i]):
        return True
    following = [line for line in lines[i + 1 : i + 4] if line.strip()]
    return bool(_ON_DATE.search(lines[i]) and following and _BLOCK_HEADER.match(following[0]))


def _body_lines(raw: str) -> list[str]:
    """Body lines without the RFC-822 header and without forwarded/original-message header blocks."""
    lines = _strip_rfc822_header(raw).split("\n")
    kept, i = [], 0
    while i < len(lines):
        line = lines[i]
        if _starts_quoted_block(lines, i):
            end = _quoted_header_end(lines, i)
            # Without a Subject line nearby only the marker itself is known to be header.
            i = end if end is not None else i + 1
            continue
        if not _BLOCK_HEADER.match(line):
            kept.append(line)
        i += 1
    return kept


def _clean(text: str) -> str:
    """Remove - * # _ = and collapse all whitespace to single spaces on one line."""
    return " ".join(_DROPPED_CHARS.sub("", text).split())


def parse_email_body(raw: str) -> str:
    """One-line body text of a raw RFC-822 email, DEPN-style cleaned."""
    return _clean(" ".join(_body_lines(raw)))


def depn_phone_template(line: str, rng: random.Random) -> str | None:
    """A phone template sentence with the line's digits space-separated, when it holds exactly 10 digits."""
    digits = re.findall(r"\d", line)
    if len(digits) != 10:
        return None
    prefix, suffix = rng.choice(TEL_TEMPLATES)
    return prefix + " ".join(digits) + suffix


def _read_email(path: Path) -> str:
    """Email text; Enron files are mostly ASCII with stray Windows-1252 bytes."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _email_document(path: Path, top: Path, rng: random.Random) -> Document:
    """One email as a one-line Document, phone lines rewritten into the DEPN template."""
    lines = [depn_phone_template(line, rng) or line for line in _body_lines(_read_email(path))]
    return Document(path.relative_to(top).as_posix(), _clean(" ".join(lines)))


def _split_sizes(n: int, valid_size: int, test_size: int, where: str) -> tuple[int, int]:
    """Validation and test sizes, clipped to a tenth of the emails each when the request leaves no train."""
    needed = 1 + (valid_size > 0) + (test_size > 0)
    if n < needed:
        raise ValueError(f"only {n} usable emails under {where}; need at least {needed} for train/test/valid")
    if valid_size + test_size <= n - 1:
        return valid_size, test_size
    cap = max(1, n // 10)
    clipped = min(valid_size, cap), min(test_size, cap)
    log.warning("only %d emails: clipping valid_size/test_size %s to %s", n, (valid_size, test_size), clipped)
    return clipped


def load_enron(
    root: str | Path, min_words: int = 5, seed: int = 0, valid_size: int = 3000, test_size: int = 3000
) -> tuple[list[Document], list[Document], list[Document]]:
    """(train, valid, test) emails in maildir order: the last valid_size are valid, the test_size before them test."""
    for name, value in (("min_words", min_words), ("valid_size", valid_size), ("test_size", test_size)):
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")
    top, rng = _resolve_root(root), random.Random(seed)
    docs = [_email_document(path, top, rng) for path in iter_maildir(top)]
    docs = [d for d in docs if len(d.text.split()) >= min_words]
    valid_n, test_n = _split_sizes(len(docs), valid_size, test_size, str(root))
    n_train = len(docs) - valid_n - test_n
    return docs[:n_train], docs[len(docs) - valid_n :], docs[n_train : n_train + test_n]


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject archive members that could write outside the extraction folder."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name) or ".." in parts:
        raise ValueError(f"unsafe path {member.name!r} in {archive}: absolute paths and '..' are not allowed")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"unsafe member {member.name!r} in {archive}: only regular files and folders are allowed")


def _find_maildir(folder: Path) -> Path:
    """The extracted maildir: `maildir` at the top or one level down, else the folder itself."""
    candidates = [folder / "maildir", *sorted(folder.glob("*/maildir"))]
    return next((c for c in candidates if c.is_dir()), folder)


def load_enron_tarball(
    path: str | Path, min_words: int = 5, seed: int = 0, valid_size: int = 3000, test_size: int = 3000
) -> tuple[list[Document], list[Document], list[Document]]:
    """Safely extract an Enron .tar.gz to a temporary folder and load it with load_enron."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Enron tarball {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="enron-") as tmp, tarfile.open(path, "r:*") as archive:
        members = archive.getmembers()
        for member in members:
            _check_member(member, path)
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(tmp, members=members, **extra)
        return load_enron(_find_maildir(Path(tmp)), min_words, seed, valid_size, test_size)
