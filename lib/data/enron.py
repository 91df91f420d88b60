"""Loader for the CMU Enron maildir (maildir/<user>/<folder>/<n>.), prepared DEPN-style.

Each email becomes one line of body text: the RFC-822 header block and the header blocks of
forwarded or quoted messages are dropped, the characters - * # _ = are removed and whitespace
is collapsed. Lines holding exactly ten digits are rewritten as a phone-number template
sentence with space-separated digits, the format the TEL secrets use.
"""
from __future__ import annotations

import gzip
import logging
import lzma
import os
import random
import re
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator

from lib.core.io import InputError, MissingInput, read_bytes
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
# what reading a damaged archive raises: gzip, xz and tar errors, a stream that ends early
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
ALLOWED = "allowed: the CMU Enron maildir folder or its .tar.gz"


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting '2.' before '10.'."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", name) if part)


def _resolve_root(root: str | Path) -> Path:
    """The maildir folder itself: `root`, or `root/maildir` when that exists."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"Enron maildir root {root} does not exist or is not a folder; {ALLOWED}")
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


def _read_email(path: Path, name: str) -> str:
    """Email text; Enron files are mostly ASCII with stray Windows-1252 bytes; a NUL byte marks a binary file."""
    data = read_bytes(path)
    nul = data.find(b"\0")
    if nul >= 0:  # latin-1 decodes any bytes: without this check an image would be read as an email
        raise InputError(f"{name} is a binary file (NUL byte at offset {nul}); {ALLOWED}, text emails only")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _email_document(path: Path, top: Path, rng: random.Random, source: str) -> Document:
    """One email as a one-line Document, phone lines rewritten into the DEPN template."""
    name = path.relative_to(top).as_posix()
    lines = [depn_phone_template(line, rng) or line for line in _body_lines(_read_email(path, f"{source}: {name}"))]
    return Document(name, _clean(" ".join(lines)))


def _split_sizes(n: int, valid_size: int, test_size: int, where: str) -> tuple[int, int]:
    """Validation and test sizes, clipped to a tenth of the emails each when the request leaves no train."""
    needed = 1 + (valid_size > 0) + (test_size > 0)
    if n < needed:
        raise InputError(f"only {n} usable emails under {where}; need at least {needed} for train/test/valid")
    if valid_size + test_size <= n - 1:
        return valid_size, test_size
    cap = max(1, n // 10)
    clipped = min(valid_size, cap), min(test_size, cap)
    log.warning("only %d emails: clipping valid_size/test_size %s to %s", n, (valid_size, test_size), clipped)
    return clipped


def load_enron(
    root: str | Path, min_words: int = 5, seed: int = 0, valid_size: int = 3000, test_size: int = 3000,
    source: str | None = None,
) -> tuple[list[Document], list[Document], list[Document]]:
    """(train, valid, test) emails in maildir order: the last valid_size are valid, the test_size before them test.

    `source` names the emails in errors (the archive they were extracted from; default: `root`).
    """
    for name, value in (("min_words", min_words), ("valid_size", valid_size), ("test_size", test_size)):
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")
    top, rng, source = _resolve_root(root), random.Random(seed), source or str(root)
    docs = [_email_document(path, top, rng, source) for path in iter_maildir(top)]
    docs = [d for d in docs if len(d.text.split()) >= min_words]
    valid_n, test_n = _split_sizes(len(docs), valid_size, test_size, source)
    n_train = len(docs) - valid_n - test_n
    return docs[:n_train], docs[len(docs) - valid_n :], docs[n_train : n_train + test_n]


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject archive members that could write outside the extraction folder."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name) or ".." in parts:
        raise InputError(f"unsafe path {member.name!r} in {archive}: absolute paths and '..' are not allowed")
    if not (member.isfile() or member.isdir()):
        raise InputError(f"unsafe member {member.name!r} in {archive}: only regular files and folders are allowed")


def _find_maildir(folder: Path) -> Path:
    """The extracted maildir: `maildir` at the top or one level down, else the folder itself."""
    candidates = [folder / "maildir", *sorted(folder.glob("*/maildir"))]
    return next((c for c in candidates if c.is_dir()), folder)


def _open_archive(path: Path) -> tarfile.TarFile:
    """The archive opened for reading; InputError in one line when it is not a tar, tar.gz, .bz2 or .xz file."""
    try:
        return tarfile.open(path, "r:*")
    except _ARCHIVE_ERRORS:  # tarfile's own message spans one line per compression it tried
        raise InputError(f"{path} is not a tar or tar.gz archive; {ALLOWED}") from None


def check_source(path: str | Path | None) -> None:
    """Fail fast on a data.enron_path that is unset or missing, an empty maildir, or a file that is not a tar archive.

    Only the archive's first member is read: damage further in is found when the stage extracts it.
    """
    if not path or not Path(path).exists():
        raise MissingInput(f"data.enron_path = {None if path is None else str(path)!r} does not exist; {ALLOWED}")
    path = Path(path)
    if path.is_file():
        with _open_archive(path) as archive:
            try:
                archive.next()
            except _ARCHIVE_ERRORS:
                raise InputError(f"{path} is a truncated or corrupt archive; {ALLOWED}") from None
    elif next(iter_maildir(path), None) is None:
        raise InputError(f"Enron maildir {path} holds no email files; {ALLOWED}")


def load_enron_tarball(
    path: str | Path, min_words: int = 5, seed: int = 0, valid_size: int = 3000, test_size: int = 3000
) -> tuple[list[Document], list[Document], list[Document]]:
    """Safely extract an Enron .tar.gz to a temporary folder and load it with load_enron."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"Enron tarball {path} does not exist; {ALLOWED}")
    with tempfile.TemporaryDirectory(prefix="enron-") as tmp, _open_archive(path) as archive:
        try:
            members = archive.getmembers()
            for member in members:
                _check_member(member, path)
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(tmp, members=members, **extra)
        except _ARCHIVE_ERRORS:
            raise InputError(f"{path} is a truncated or corrupt archive; {ALLOWED}") from None
        return load_enron(_find_maildir(Path(tmp)), min_words, seed, valid_size, test_size, source=str(path))
