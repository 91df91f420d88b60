"""Tests for the Enron maildir loader, on a small hand-written fixture maildir."""
from __future__ import annotations

import io
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from lib.data.corpus import TEL_TEMPLATES
from lib.data.enron import depn_phone_template, iter_maildir, load_enron, load_enron_tarball, parse_email_body

FIXTURE = Path(__file__).parent / "fixtures" / "enron_maildir"
ORDER = [
    "allen-p/inbox/1.",
    "allen-p/inbox/2.",
    "allen-p/sent_items/1.",
    "lay-k/_sent_mail/1.",
    "lay-k/inbox/1.",
    "lay-k/inbox/2.",
    "skilling-j/inbox/1.",
    "skilling-j/inbox/2.",
    "skilling-j/inbox/10.",
]
HEADER_WORDS = ("Message-ID", "X-FileName", "X-Folder", "X-From", "Mime-Version", "Content-Type", "JavaMail", "pst")


def _raw(rel: str) -> str:
    return (FIXTURE / rel).read_text()


def test_iter_maildir_yields_every_email_in_natural_order() -> None:
    paths = [p.relative_to(FIXTURE).as_posix() for p in iter_maildir(FIXTURE)]
    assert paths == ORDER  # 2. before 10., users then folders sorted


def test_iter_maildir_accepts_the_parent_of_maildir(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "maildir")
    (tmp_path / "maildir" / "allen-p" / "inbox" / ".DS_Store").write_text("junk")
    paths = [p.relative_to(tmp_path / "maildir").as_posix() for p in iter_maildir(tmp_path)]
    assert paths == ORDER


def test_missing_root_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_maildir"):
        list(iter_maildir(tmp_path / "no_such_maildir"))
    with pytest.raises(FileNotFoundError, match="no_such_maildir"):
        load_enron(tmp_path / "no_such_maildir")


def test_parse_drops_rfc822_header_and_cleans_characters() -> None:
    body = parse_email_body(_raw("allen-p/inbox/1."))
    assert body == "Here is our forecast for the west desk. Gas demand at Malin should stay strong through June."
    for word in HEADER_WORDS + ("tim.belden", "Subject", "Forecast for the west desk"):
        assert word not in body


def test_parse_removes_forwarded_header_block() -> None:
    body = parse_email_body(_raw("lay-k/inbox/2."))
    expected = (
        "Ken see the note below on the price cap hearing. "
        "The FERC hearing on price caps moved to next Tuesday. Rick"
    )
    assert body == expected
    assert "Forwarded" not in body and "Steffes" not in body and "10:02" not in body


def test_parse_removes_original_message_header_block() -> None:
    body = parse_email_body(_raw("lay-k/_sent_mail/1."))
    assert body == "Steve, please make sure Rick attends the hearing next week. The hearing moved to Tuesday."


def test_parse_removes_special_characters_and_newlines() -> None:
    raw = "From: a@b.com\nSubject: x\n\nline one -- with *stars*\n\n# heading_x = y\r\n   end\n"
    assert parse_email_body(raw) == "line one with stars headingx y end"  # removed, not spaced
    assert parse_email_body("no header here\nsecond line") == "no header here second line"


def test_depn_phone_template_spaces_exactly_ten_digits() -> None:
    sentence = depn_phone_template("Their direct line is (713) 853-6789", random.Random(0))
    assert sentence is not None and "7 1 3 8 5 3 6 7 8 9" in sentence
    assert any(sentence == p + "7 1 3 8 5 3 6 7 8 9" + s for p, s in TEL_TEMPLATES)
    assert depn_phone_template("call 853-6789", random.Random(0)) is None  # 7 digits
    assert depn_phone_template("1 (713) 853-6789", random.Random(0)) is None  # 11 digits
    assert depn_phone_template("no digits", random.Random(0)) is None


def test_depn_phone_template_is_seeded() -> None:
    lines = [f"ext ({d}13) 555-0199" for d in range(2, 10)]
    first = [depn_phone_template(line, random.Random(3)) for line in lines]
    assert first == [depn_phone_template(line, random.Random(3)) for line in lines]
    rng = random.Random(3)
    assert len({depn_phone_template("713 853 6789", rng).split(" 7 1 3")[0] for _ in range(40)}) > 1


def test_load_enron_drops_short_emails_and_splits_without_shuffle() -> None:
    train, valid, test = load_enron(FIXTURE, valid_size=1, test_size=2)
    kept = [rel for rel in ORDER if rel != "skilling-j/inbox/1."]  # "Lunch at noon?" has 3 words
    assert [d.id for d in train + test + valid] == kept
    assert [d.id for d in valid] == kept[-1:]
    assert [d.id for d in test] == kept[-3:-1]
    assert all("\n" not in d.text and len(d.text.split()) >= 5 for d in train + valid + test)


def test_load_enron_rewrites_phone_lines_as_template() -> None:
    train, _, _ = load_enron(FIXTURE, valid_size=1, test_size=1)
    text = {d.id: d.text for d in train}["lay-k/inbox/1."]
    assert "7 1 3 8 5 3 6 7 8 9" in text and "853" not in text.replace("8 5 3", "")
    assert text.startswith("Ken, The governor's office") and text.endswith("Thanks, Rosalee")


def test_load_enron_is_deterministic_and_min_words_applies() -> None:
    first = load_enron(FIXTURE, seed=5, valid_size=1, test_size=1)
    assert first == load_enron(FIXTURE, seed=5, valid_size=1, test_size=1)
    train, valid, test = load_enron(FIXTURE, min_words=0, valid_size=1, test_size=1)
    assert len(train) + len(valid) + len(test) == len(ORDER)


def test_load_enron_clips_oversized_splits_for_small_inputs() -> None:
    train, valid, test = load_enron(FIXTURE)  # defaults ask for 3000 + 3000
    assert (len(train), len(valid), len(test)) == (6, 1, 1)
    assert valid[0].id == "skilling-j/inbox/10."


def test_load_enron_raises_when_too_few_emails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only 0 usable emails"):
        load_enron(FIXTURE, min_words=1000)
    empty = tmp_path / "maildir"
    empty.mkdir()
    with pytest.raises(ValueError, match="only 0 usable emails"):
        load_enron(tmp_path)
    with pytest.raises(ValueError, match="valid_size=-1"):
        load_enron(FIXTURE, valid_size=-1)


def _tarball(path: Path, prefix: str = "maildir") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.add(FIXTURE, arcname=prefix)
    return path


def test_load_enron_tarball_matches_folder_load(tmp_path: Path) -> None:
    expected = load_enron(FIXTURE, valid_size=1, test_size=2)
    assert load_enron_tarball(_tarball(tmp_path / "enron.tar.gz"), valid_size=1, test_size=2) == expected
    nested = _tarball(tmp_path / "nested.tar.gz", prefix="enron_mail_20150507/maildir")
    assert load_enron_tarball(nested, valid_size=1, test_size=2) == expected


def _evil_tarball(path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.type = kind
        data = b"From: x\n\nhello there general kenobi friend\n"
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize(
    "name, kind",
    [("../evil/1.", tarfile.REGTYPE), ("/tmp/evil/1.", tarfile.REGTYPE), ("maildir/u/f/link", tarfile.SYMTYPE)],
)
def test_load_enron_tarball_rejects_unsafe_members(tmp_path: Path, name: str, kind: bytes) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        load_enron_tarball(_evil_tarball(tmp_path / "evil.tar.gz", name, kind))
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil/1.").exists()


def test_load_enron_tarball_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.tar.gz"):
        load_enron_tarball(tmp_path / "absent.tar.gz")
