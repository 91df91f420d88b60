"""Bad user input fails with one line naming the file (and line), never the row's text, a secret or raw bytes.

A matrix of bad inputs across every loader of user-supplied files, then a few runs of real stage entry points
(`python -m flows.<stage>`): exit code 2, one `error:` line on stderr, no traceback, no planted secret.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from prefect.states import Failed
from safetensors.torch import save

from flows import _QuietInputErrors, error_line
from lib.bench import lume, tofu
from lib.core.io import InputError, MissingInput, load_tensors, read_json
from lib.core.models import check_family, load_tokenizer
from lib.data import emails, enron
from lib.data.emails import EmailsConfig
from lib.data.records import read_secrets
from tasks import transient

ROOT = Path(__file__).resolve().parents[1]
CANARY = "CANARY-7f3a9-SECRET"  # planted as a secret: no message may show it
TEXT = f"Please call Dana about {CANARY} tomorrow"  # a row's private text: no message may show it either


@dataclass(frozen=True)
class Case:
    """A bad input: what builds it under a folder and calls the loader, the error it must raise, where it points."""

    call: Callable[[Path], Any]  # builds the input under tmp_path, then loads it
    error: type[BaseException]
    names: str  # a part of the message naming the file (or the key) at fault
    line: int | None = None  # the line the message must name, where there is one


class Vocab:
    """A tokenizer stand-in: 100 ids, decoded as their numbers."""

    def __len__(self) -> int:
        return 100

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def write(path: Path, data: str | bytes) -> Path:
    """Write text or bytes, making the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def jsonl(*rows: Any) -> str:
    """JSONL text: objects dumped, strings kept as raw lines."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD = {"id": "row-1", "text": TEXT, "secret": CANARY}


def candidates(content: str | bytes) -> Callable[[Path], Any]:
    """Read a causal JSONL file holding `content`."""
    return lambda tmp: emails.read_jsonl_candidates(write(tmp / "cands.jsonl", content))


def tdec(limit: int | None = None, **arrays: np.ndarray) -> Callable[[Path], Any]:
    """Read the first `limit` rows of a TDEC folder holding the named arrays."""
    def call(tmp: Path) -> Any:
        (tmp / "tdec").mkdir()
        for name, array in arrays.items():
            np.save(tmp / "tdec" / f"{name}.npy", array)
        return emails.read_tdec(tmp / "tdec", Vocab(), limit=limit)
    return call


def corrupt_npy(tmp: Path) -> Any:
    """Read a TDEC folder whose array file has a .npy magic and then the secret."""
    write(tmp / "tdec" / "train_dataset.npy", b"\x93NUMPY" + CANARY.encode())
    return emails.read_tdec(tmp / "tdec", Vocab())


def folder(path: Path) -> Path:
    """Make a folder at `path` (where a file is expected)."""
    path.mkdir(parents=True)
    return path


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz holding the named files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


EMAIL = f"From: a@enron.com\nSubject: hi\n\nCall me about {CANARY} please, before the meeting today\n".encode()
# incompressible bodies: cut in half, the gzip stream ends inside a member's data
ARCHIVE = tar_gz({f"maildir/user-{i}/inbox/{i}.": EMAIL + os.urandom(4000) for i in range(4)})


def enron_tarball(data: bytes) -> Callable[[Path], Any]:
    """Load an Enron .tar.gz holding `data`."""
    return lambda tmp: enron.load_enron_tarball(write(tmp / "enron.tar.gz", data))


def binary_maildir(tmp: Path) -> Any:
    """Load a maildir where one 'email' is binary."""
    for i in range(3):
        write(tmp / "maildir" / "allen-p" / "inbox" / f"{i + 1}.", EMAIL)
    write(tmp / "maildir" / "allen-p" / "inbox" / "4.", b"\x89PNG\r\n\x1a\n\0\0\0" + CANARY.encode())
    return enron.load_enron(tmp / "maildir", valid_size=1, test_size=1)


TOFU_ROW = {"question": TEXT, "answer": CANARY, "paraphrased_answer": CANARY, "perturbed_answer": [CANARY]}


def tofu_file(content: str | bytes) -> Callable[[Path], Any]:
    """Load TOFU's forget01 split from a data_root whose file holds `content`."""
    return lambda tmp: tofu.load_split("forget01", write(tmp / "tofu" / "forget01.json", content).parents[1])


LUME_ROW = {"id": "doc1sc1", "input": TEXT, "output": CANARY, "task": "Task2"}


def lume_file(content: str | bytes) -> Callable[[Path], Any]:
    """Load LUME's forget split from a data_root whose forget.jsonl holds `content`."""
    return lambda tmp: lume.load_split("forget", write(tmp / "lume" / "forget.jsonl", content).parents[1])


def safetensors_bytes() -> bytes:
    """A small valid safetensors file's bytes."""
    return save({"weight": torch.arange(64, dtype=torch.float32)})


def truncated_model(tmp: Path) -> Any:
    """Check a causal model folder whose weights file is cut short."""
    write(tmp / "model" / "config.json", json.dumps({"model_type": "gpt2"}))
    write(tmp / "model" / "model.safetensors", safetensors_bytes()[:200])
    return check_family(str(tmp / "model"), "causal")


def non_utf8_line(number: int) -> bytes:
    """JSONL bytes whose line `number` holds the secret in Latin-1 (not UTF-8)."""
    rows = [json.dumps({"id": f"row-{i}", "text": f"plain row {i}"}).encode() for i in range(1, number)]
    return b"\n".join(rows + [f'{{"text": "caf\xe9 {CANARY}"}}'.encode("latin-1")]) + b"\n"


CASES = {
    # the causal track's JSONL of candidates (causal.data.source: jsonl)
    "jsonl missing file": Case(lambda tmp: emails.read_jsonl_candidates(tmp / "nope.jsonl"), MissingInput,
                               "nope.jsonl"),
    "jsonl is a folder": Case(lambda tmp: emails.read_jsonl_candidates(folder(tmp / "cands.jsonl")), InputError,
                              "cands.jsonl is a folder"),
    "jsonl empty file": Case(candidates(""), InputError, "cands.jsonl"),
    "jsonl blank lines only": Case(candidates("\n \n"), InputError, "cands.jsonl"),
    "jsonl non-UTF-8 line": Case(candidates(non_utf8_line(3)), InputError, "cands.jsonl", 3),
    "jsonl invalid JSON line": Case(candidates(jsonl(GOOD, f'{{"text": "{TEXT}", "secret": ')), InputError,
                                    "cands.jsonl", 2),
    "jsonl missing text": Case(candidates(jsonl({"text": "fine"}, {"secret": CANARY})), InputError, "cands.jsonl", 2),
    "jsonl numeric secret": Case(candidates(jsonl({"text": TEXT, "secret": 42})), InputError, "cands.jsonl", 1),
    "jsonl numeric text": Case(candidates(jsonl(GOOD, {"text": 7})), InputError, "cands.jsonl", 2),
    "jsonl row is a list": Case(candidates(jsonl(GOOD, [TEXT, CANARY])), InputError, "cands.jsonl", 2),
    "jsonl secret not in text": Case(candidates(jsonl({"text": "nothing here", "secret": CANARY})), InputError,
                                     "cands.jsonl", 1),
    "jsonl duplicate ids": Case(candidates(jsonl(GOOD, {"text": "x", "id": "a"}, {**GOOD, "text": TEXT + "!"})),
                                InputError, "cands.jsonl", 3),
    "jsonl id of wrong type": Case(candidates(jsonl({**GOOD, "id": [1]})), InputError, "cands.jsonl", 1),
    # Training Data Extraction Challenge arrays (source: tdec)
    "tdec ids out of range": Case(tdec(train_prefix=np.array([[1, 2], [3, 100]]), train_suffix=np.array([[4], [5]])),
                                  InputError, "train_prefix.npy"),
    "tdec negative ids": Case(tdec(train_dataset=np.array([[1, -2]])), InputError, "train_dataset.npy"),
    "tdec zero rows": Case(tdec(train_dataset=np.zeros((0, 4), dtype=np.int64)), InputError, "train_dataset.npy"),
    "tdec limit 0": Case(tdec(limit=0, train_dataset=np.ones((2, 2), dtype=np.int64)), ValueError, "limit=0"),
    "tdec_limit 0 in params": Case(lambda tmp: EmailsConfig(source="tdec", path=str(tmp), tdec_limit=0), ValueError,
                                   "tdec_limit=0"),
    "tdec corrupt npy": Case(corrupt_npy, InputError, "train_dataset.npy"),
    "tdec missing folder": Case(lambda tmp: emails.read_tdec(tmp / "absent", Vocab()), MissingInput, "absent"),
    # the Enron maildir source (data.source: enron)
    "enron truncated tar.gz": Case(enron_tarball(ARCHIVE[: len(ARCHIVE) // 2]), InputError, "enron.tar.gz"),
    "enron random bytes as tar": Case(enron_tarball(os.urandom(4096)), InputError, "enron.tar.gz"),
    "enron gzip of no tar": Case(enron_tarball(gzip.compress(EMAIL * 40)), InputError, "enron.tar.gz"),
    "enron check of random bytes": Case(lambda tmp: enron.check_source(write(tmp / "e.tgz", os.urandom(999))),
                                        InputError, "e.tgz"),
    "enron binary email": Case(binary_maildir, InputError, "allen-p/inbox/4."),
    # TOFU and LUME local copies (benchmarks.data_root)
    "tofu JSON with trailing junk": Case(tofu_file(json.dumps([TOFU_ROW]) + f"\n{CANARY}\n"), InputError,
                                         "forget01.json", 2),
    "tofu JSONL junk line": Case(tofu_file(jsonl(TOFU_ROW, TOFU_ROW, f"{CANARY},")), InputError, "forget01.json", 3),
    "tofu non-UTF-8": Case(tofu_file(json.dumps(TOFU_ROW).encode() + b"\n\xff" + CANARY.encode()), InputError,
                           "forget01.json", 2),
    "tofu wrong field type": Case(tofu_file(jsonl({**TOFU_ROW, "answer": 3})), InputError, "forget01.json", 1),
    "tofu empty": Case(tofu_file(""), InputError, "forget01.json"),
    "lume empty forget.jsonl": Case(lume_file(""), InputError, "forget.jsonl"),
    "lume duplicate ids": Case(lume_file(jsonl(LUME_ROW, LUME_ROW)), InputError, "forget.jsonl"),
    "lume invalid JSON": Case(lume_file(jsonl(LUME_ROW, f'{{"id": "{CANARY}'),), InputError, "forget.jsonl", 2),
    "lume row is a string": Case(lume_file(jsonl(LUME_ROW, json.dumps(TEXT))), InputError, "forget.jsonl", 2),
    # lib.core.io readers and model folders
    "json trailing junk": Case(lambda tmp: read_json(write(tmp / "forget.json", f'{{"ids": []}} {CANARY}')),
                               InputError, "forget.json", 1),
    "secrets not UTF-8": Case(lambda tmp: read_secrets(write(tmp / "secrets.jsonl", b'{"secret": "\xff\xfe"}\n')),
                              InputError, "secrets.jsonl", 1),
    "truncated safetensors": Case(lambda tmp: load_tensors(write(tmp / "stats.safetensors",
                                                                 safetensors_bytes()[:100])),
                                  InputError, "stats.safetensors"),
    "empty safetensors": Case(lambda tmp: load_tensors(write(tmp / "e.safetensors", b"")), InputError,
                              "e.safetensors"),
    "missing model folder": Case(lambda tmp: check_family(str(tmp / "models" / "mine"), "masked"), MissingInput,
                                 "model folder"),
    "missing relative model folder": Case(lambda tmp: load_tokenizer("./no/such/model"), MissingInput,
                                          "model folder ./no/such/model not found"),
    "model weights truncated": Case(truncated_model, InputError, "model.safetensors"),
    "model path is a file": Case(lambda tmp: check_family(str(write(tmp / "m.bin", b"x")), "causal"), InputError,
                                 "m.bin"),
}


def chain(err: BaseException) -> list[BaseException]:
    """The error and every cause and context behind it."""
    out: list[BaseException] = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_in_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    with pytest.raises(case.error) as info:
        case.call(tmp_path)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, message
    assert case.names in message, message
    if case.line is not None:
        assert f"line {case.line}" in message, message
    logged = "".join(traceback.format_exception(info.value))  # what Prefect would log for a failed run
    for text in (message, repr(info.value), logged, *map(repr, chain(info.value))):
        assert CANARY not in text and TEXT not in text, text
    assert "\\x" not in message and "b'" not in message, message  # never raw bytes


def test_decode_errors_carry_no_bytes(tmp_path: Path) -> None:
    """The UTF-8 error is raised outside the decode's except block: no exception in its chain holds the file."""
    data = non_utf8_line(7)
    with pytest.raises(InputError) as info:
        emails.read_jsonl_candidates(write(tmp_path / "c.jsonl", data))
    offset = data.index(b"\xe9")
    assert str(info.value) == f"{tmp_path / 'c.jsonl'} line 7 is not UTF-8 (byte offset {offset}); allowed: UTF-8 text"
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_rows_may_hold_line_separators(tmp_path: Path) -> None:
    """Lines are split at newlines only: U+2028 inside a JSON string is text, and line numbers stay the file's."""
    rows = emails.read_jsonl_candidates(write(tmp_path / "c.jsonl", jsonl('{"text": "a\u2028b"}', "", {"text": "c"})))
    assert [(c.id, c.text) for c in rows] == [("jsonl-00001", "a\u2028b"), ("jsonl-00003", "c")]


def test_missing_input_is_also_file_not_found(tmp_path: Path) -> None:
    """Callers that catch FileNotFoundError keep working."""
    with pytest.raises(FileNotFoundError, match="gone.jsonl"):
        emails.read_jsonl_candidates(tmp_path / "gone.jsonl")


def test_error_line_never_shows_undecodable_bytes() -> None:
    secret = CANARY.encode() + b"\xff"
    try:
        secret.decode("utf-8")
    except UnicodeDecodeError as err:
        line = error_line(err)
    assert line == f"input is not utf-8 (byte offset {len(CANARY)}); allowed: UTF-8 text"
    assert error_line(OSError(2, "No such file or directory", "out/x")) == "out/x: No such file or directory"
    assert error_line(ValueError("two\nlines")) == "two lines"


def test_prefect_logs_no_traceback_for_input_errors() -> None:
    """A failed run's record of an input error keeps its message and drops its traceback; a bug keeps both."""
    def record(err: BaseException) -> logging.LogRecord:
        try:
            raise err
        except BaseException:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())

    quiet, bug = record(InputError("x.jsonl line 2: bad")), record(TypeError("a bug"))
    assert _QuietInputErrors().filter(quiet) and quiet.exc_info is None
    assert _QuietInputErrors().filter(bug) and bug.exc_info is not None


@pytest.mark.parametrize("error, retried", [
    (InputError("bad file"), False), (MissingInput("model folder x not found"), False),
    (PermissionError(13, "denied"), False), (IsADirectoryError(21, "folder"), False),
    (ValueError("a bug"), False), (ConnectionError("hub unreachable"), True), (OSError("disk hiccup"), True)])
def test_model_loading_retries_only_transient_errors(error: BaseException, retried: bool) -> None:
    assert transient(None, None, Failed(data=error)) is retried


# ---------------------------------------------------------------- real stage entry points

def run_stage(tmp_path: Path, stage: str, edit: Callable[[dict], None]) -> subprocess.CompletedProcess:
    """Run `python -m flows.<stage>` in tmp_path with a copy of params.yaml changed by `edit`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "UNLEARN_PARAMS": str(tmp_path / "params.yaml"), "PREFECT_HOME": str(tmp_path / "pf"),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", f"flows.{stage}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def causal_jsonl(path: Path) -> Callable[[dict], None]:
    """A params edit pointing the causal track at a JSONL of candidates."""
    return lambda params: params["causal"]["data"].update(source="jsonl", path=str(path))


@pytest.mark.parametrize("stage, content, edit, needle", [
    ("causal_data", jsonl(GOOD, {"text": TEXT, "secret": 42}), causal_jsonl, "line 2: 'secret' is a number"),
    ("causal_data", non_utf8_line(4), causal_jsonl, "line 4 is not UTF-8"),
    ("data", os.urandom(2048) + CANARY.encode(),
     lambda path: lambda params: params["data"].update(source="enron", enron_path=str(path)), "not a tar"),
    ("causal_base", None, lambda path: lambda params: params["causal"].update(model="./models/mine"),
     "model folder ./models/mine not found"),
])
def test_a_stage_stops_on_bad_input_with_one_line(tmp_path: Path, stage: str, content: Any, edit: Any,
                                                  needle: str) -> None:
    """Exit code 2, one `error:` line on stderr naming the problem, no traceback, no secret, nothing written."""
    path = tmp_path / "input.bin"
    if content is not None:
        write(path, content)
    result = run_stage(tmp_path, stage, edit(path))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr[-3000:]
    both = result.stdout + result.stderr
    assert "Traceback" not in both and CANARY not in both and TEXT not in both
    assert not (tmp_path / "data").exists()


# --- offline first: a hub name that cannot load fails at once, not after a minute of retries -------------------

def test_unreachable_hub_fails_at_once_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from huggingface_hub import constants

    from lib.core import models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    started = time.monotonic()
    with pytest.raises(InputError, match=r"someone/not-cached-model .* hub \(http://127.0.0.1:9\) cannot be reached") as err:
        models.load_tokenizer("someone/not-cached-model")
    assert time.monotonic() - started < 10 and "\n" not in str(err.value)


def test_reachable_hub_or_offline_mode_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from lib.core import models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout_s=3.0: True)
    models.check_hub("someone/not-cached-model")  # reachable: transformers takes it from here
    monkeypatch.setattr(models, "hub_reachable", lambda timeout_s=3.0: pytest.fail("offline mode must not probe"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.check_hub("someone/not-cached-model")  # offline mode: transformers fails fast by itself


def test_readme_bad_input_tables_are_generated_from_these_cases() -> None:
    """reports/bad_inputs.md (README's tables) is what running CASES and BAD again prints: `make readme`."""
    from tools.bad_inputs import REPORT, render

    assert REPORT.read_text(encoding="utf-8") == render()
