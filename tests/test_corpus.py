"""Tests for the seeded Enron-style corpus generator with planted secrets."""
from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from pathlib import Path

import pytest

from lib.data.corpus import (NAME_TEMPLATES, PASSPHRASE_WORDS, RANDOM_TEMPLATES, TEL_TEMPLATES, Corpus, CorpusConfig,
                             build_pools, default_corpus_config, generate_corpus, write_corpus)
from lib.data.records import SecretRecord, read_documents, read_secrets

FILES = ("train.jsonl", "valid.jsonl", "secrets.jsonl", "controls.jsonl", "stats.json")


def small_config(**overrides: object) -> CorpusConfig:
    """A config small enough for unit tests but with every category and several repetition levels."""
    base = dict(
        seed=7,
        n_background_emails=300,
        secrets_per_category={"TEL": 5, "NAME": 5, "RANDOM": 3},
        repetitions=(2, 3, 5),
        n_controls_per_category=12,
    )
    return CorpusConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(small_config())


def _words(text: str) -> set[str]:
    return set(text.split())


def test_same_config_gives_byte_identical_files(tmp_path: Path) -> None:
    write_corpus(generate_corpus(small_config()), tmp_path / "a")
    write_corpus(generate_corpus(small_config()), tmp_path / "b")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    write_corpus(generate_corpus(small_config(seed=8)), tmp_path / "c")
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()
    assert (tmp_path / "a" / "secrets.jsonl").read_bytes() != (tmp_path / "c" / "secrets.jsonl").read_bytes()


def test_corpus_does_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faker's date providers draw up to *now*; the generator must not call any of them."""
    from faker.providers import date_time

    def clock(*_args: object, **_kwargs: object) -> str:
        raise AssertionError("corpus generation used a clock-dependent Faker date provider")

    for method in ("day_of_week", "month_name", "date_time", "date_time_between", "unix_time"):
        monkeypatch.setattr(date_time.Provider, method, clock)
    assert generate_corpus(small_config()).train == generate_corpus(small_config()).train


def test_each_secret_sentence_occurs_exactly_repetitions_times_in_distinct_emails(corpus: Corpus) -> None:
    for record in corpus.secrets:
        per_doc = [d.text.count(record.text) for d in corpus.train]
        assert sum(per_doc) == record.repetitions, record.id
        assert max(per_doc) == 1, record.id  # distinct emails
        assert corpus.stats["repetitions"][record.id] == record.repetitions


def test_repetitions_cycle_within_each_category(corpus: Corpus) -> None:
    for category in ("TEL", "NAME", "RANDOM"):
        reps = [r.repetitions for r in corpus.secrets if r.category == category]
        assert reps == [(2, 3, 5)[i % 3] for i in range(len(reps))]
    assert [r.id for r in corpus.secrets if r.category == "TEL"] == [f"TEL-{i:04d}" for i in range(5)]


def test_secret_sentence_sits_inside_the_email_body(corpus: Corpus) -> None:
    for record in corpus.secrets:
        for doc in corpus.train:
            if record.text in doc.text:
                before, after = doc.text.split(record.text)
                assert before.strip() and after.strip()  # greeting before, sign-off after
                assert before.endswith(" ") and after.startswith(" ")


def test_valid_split_has_no_secret_and_fraction_is_respected(corpus: Corpus) -> None:
    assert len(corpus.valid) == round(0.05 * 300)
    assert len(corpus.train) + len(corpus.valid) == 300
    assert not {d.id for d in corpus.train} & {d.id for d in corpus.valid}
    for doc in corpus.valid:
        assert not any(r.secret in doc.text for r in corpus.secrets + corpus.controls)


def test_controls_are_never_inserted_and_marked(corpus: Corpus) -> None:
    texts = [d.text for d in corpus.train + corpus.valid]
    for record in corpus.controls:
        assert record.is_control and record.repetitions == 0
        assert not any(record.secret in t for t in texts), record.id
        assert not any(record.prefix.strip() in t for t in texts) or record.category == "TEL", record.id
    ids = [r.id for r in corpus.controls]
    assert ids[0] == "CTRL-TEL-0000" and "CTRL-NAME-0011" in ids and "CTRL-RANDOM-0011" in ids
    assert len(ids) == 36 and len(set(ids)) == 36


def test_secret_formats_and_templates(corpus: Corpus) -> None:
    tel_templates, words = set(TEL_TEMPLATES), set(PASSPHRASE_WORDS)
    for record in corpus.secrets + corpus.controls:
        assert record.prefix.endswith(" ") and record.suffix[:1] in (" ", ".", ",")
        if record.category == "TEL":
            assert re.fullmatch(r"\d( \d){9}", record.secret)
            assert (record.prefix, record.suffix) in tel_templates
        elif record.category == "NAME":
            assert re.fullmatch(r"[a-z]+ [a-z]+", record.secret)
        else:
            assert len(record.secret.split()) == 6 and set(record.secret.split()) <= words
    # Controls use the same template mix as secrets: cycled in the same order.
    for category, templates in (("TEL", TEL_TEMPLATES), ("NAME", NAME_TEMPLATES), ("RANDOM", RANDOM_TEMPLATES)):
        for group in (corpus.secrets, corpus.controls):
            suffixes = [r.suffix for r in group if r.category == category]
            assert suffixes == [templates[i % len(templates)][1] for i in range(len(suffixes))]


def test_phones_passphrases_and_contexts_are_unique(corpus: Corpus) -> None:
    records = corpus.secrets + corpus.controls
    for category in ("TEL", "RANDOM", "NAME"):
        values = [r.secret for r in records if r.category == category]
        assert len(values) == len(set(values)), category
    for category in ("NAME", "RANDOM"):
        prefixes = [r.prefix for r in records if r.category == category]
        assert len(prefixes) == len(set(prefixes)), category  # the context identifies the secret


def test_pools_are_disjoint_across_roles() -> None:
    pools = build_pools(default_corpus_config(), random.Random(0))
    for kind in ("names", "codenames", "systems"):
        by_role = getattr(pools, kind)
        roles = list(by_role)
        assert sorted(roles) == ["background", "control", "secret"]
        for i, a in enumerate(roles):
            assert len(set(by_role[a])) == len(by_role[a]), (kind, a)
            for b in roles[i + 1 :]:
                assert not set(by_role[a]) & set(by_role[b]), (kind, a, b)
    name_tokens = {role: {t for n in names for t in n.split()} for role, names in pools.names.items()}
    assert not name_tokens["secret"] & name_tokens["background"]
    assert not name_tokens["control"] & (name_tokens["background"] | name_tokens["secret"])
    assert len(pools.names["secret"]) == 32 and len(pools.names["control"]) == 200


def test_secret_names_appear_only_inside_their_sentences(corpus: Corpus) -> None:
    name_tokens = {t for r in corpus.secrets + corpus.controls if r.category == "NAME" for t in r.secret.split()}
    for doc in corpus.train + corpus.valid:
        text = doc.text
        for record in corpus.secrets:
            text = text.replace(record.text, " ")
        assert not _words(text) & name_tokens, doc.id


def test_background_is_business_text_not_lorem(corpus: Corpus) -> None:
    text = " ".join(d.text for d in corpus.valid)
    assert "lorem" not in text and "ipsum" not in text
    assert text == text.lower()
    assert any(w in _words(text) for w in ("contract", "deal", "meeting", "mmbtu", "mw"))


def test_stats_report_counts_and_secret_fraction(corpus: Corpus) -> None:
    train_words = sum(len(d.text.split()) for d in corpus.train)
    secret_words = sum(len(r.secret.split()) * r.repetitions for r in corpus.secrets)
    stats = corpus.stats
    assert stats["words"]["train"] == train_words
    assert stats["secret_word_fraction"] == pytest.approx(secret_words / train_words, abs=1e-6)
    assert stats["counts"]["secrets"] == {"TEL": 5, "NAME": 5, "RANDOM": 3}
    assert stats["counts"]["controls"] == {"TEL": 12, "NAME": 12, "RANDOM": 12}
    assert stats["counts"]["valid_emails"] == len(corpus.valid)
    json.dumps(stats)  # must be JSON-serialisable


def test_too_many_secret_words_raises_with_needed_email_count() -> None:
    cfg = small_config(n_background_emails=60, repetitions=(20, 40), max_secret_token_fraction=0.05)
    with pytest.raises(ValueError, match=r"max_secret_token_fraction=0.05.*need about \d+ background emails"):
        generate_corpus(cfg)


def test_needed_email_count_in_error_is_enough() -> None:
    cfg = small_config(n_background_emails=60, repetitions=(20, 40), max_secret_token_fraction=0.05)
    with pytest.raises(ValueError) as info:
        generate_corpus(cfg)
    needed = int(re.search(r"need about (\d+)", str(info.value)).group(1))
    bigger = generate_corpus(dataclasses.replace(cfg, n_background_emails=int(needed * 1.1)))
    assert bigger.stats["secret_word_fraction"] <= 0.05


def test_repetitions_above_training_size_raise() -> None:
    with pytest.raises(ValueError, match="training emails"):
        generate_corpus(small_config(n_background_emails=20, repetitions=(50,), max_secret_token_fraction=0.9))


def test_pool_too_small_raises() -> None:
    with pytest.raises(ValueError, match="pool holds"):
        generate_corpus(small_config(n_controls_per_category=5000))


def test_background_does_not_depend_on_secret_counts() -> None:
    a = generate_corpus(small_config())
    b = generate_corpus(small_config(secrets_per_category={"TEL": 1}))
    assert a.valid == b.valid


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_background_emails": -5}, "n_background_emails=-5"),
        ({"n_controls_per_category": -1}, "n_controls_per_category=-1"),
        ({"secrets_per_category": {"EMAIL": 3}}, "unknown keys \\['EMAIL'\\]"),
        ({"secrets_per_category": {"TEL": -2}}, "secrets_per_category\\.TEL=-2"),
        ({"valid_fraction": 0.0}, "valid_fraction=0.0"),
        ({"valid_fraction": 1.5}, "valid_fraction=1.5"),
        ({"max_secret_token_fraction": 1.0}, "max_secret_token_fraction=1.0"),
        ({"repetitions": ()}, "repetitions=\\(\\)"),
        ({"repetitions": (3, 0)}, "repetitions=\\(3, 0\\)"),
        ({"seed": "x"}, "seed='x'"),
    ],
)
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_config_accepts_yaml_list_for_repetitions() -> None:
    assert small_config(repetitions=[2, 3]).repetitions == (2, 3)


def test_default_config_is_fast_and_within_budget() -> None:
    start = time.perf_counter()
    result = generate_corpus(default_corpus_config())
    assert time.perf_counter() - start < 10.0
    assert result.stats["secret_word_fraction"] <= 0.10
    assert result.stats["counts"]["controls"] == {"TEL": 200, "NAME": 200, "RANDOM": 200}
    assert 1500 <= len(result.train) + len(result.valid) <= 3000


def test_write_then_read_round_trips(corpus: Corpus, tmp_path: Path) -> None:
    write_corpus(corpus, tmp_path)
    assert read_secrets(tmp_path / "secrets.jsonl") == corpus.secrets
    assert read_secrets(tmp_path / "controls.jsonl") == corpus.controls
    assert read_documents(tmp_path / "train.jsonl") == corpus.train
    assert read_documents(tmp_path / "valid.jsonl") == corpus.valid
    assert json.loads((tmp_path / "stats.json").read_text())["repetitions"] == corpus.stats["repetitions"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_readers_name_the_file_on_missing_or_malformed_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_secrets(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="gone.jsonl"):
        read_documents(tmp_path / "gone.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match="bad.jsonl"):
        read_documents(bad)
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match="no_text.jsonl line 1"):
        read_documents(no_text)


def test_read_secrets_rejects_bad_rows(tmp_path: Path) -> None:
    good = SecretRecord("TEL-0000", "TEL", "tel : ", "1 2 3 4 5 6 7 8 9 0", " .", 3, False).to_dict()
    cases = {
        "missing.jsonl": {k: v for k, v in good.items() if k != "secret"},
        "category.jsonl": {**good, "category": "EMAIL"},
        "type.jsonl": {**good, "repetitions": "3"},
    }
    for name, row in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=f"{name} line 2"):
            read_secrets(path)


def test_per_category_repetitions_are_cycled_and_recorded() -> None:
    from lib.data.corpus import CorpusConfig, generate_corpus

    cfg = CorpusConfig(seed=3, n_background_emails=400, secrets_per_category={"TEL": 4, "NAME": 3, "RANDOM": 2},
                       repetitions={"TEL": [3, 6], "NAME": [2], "RANDOM": [1, 4]}, n_controls_per_category=5)
    corpus = generate_corpus(cfg)
    reps = {r.id: r.repetitions for r in corpus.secrets}
    assert [reps[f"TEL-000{i}"] for i in range(4)] == [3, 6, 3, 6]
    assert [reps[f"NAME-000{i}"] for i in range(3)] == [2, 2, 2]
    assert [reps[f"RANDOM-000{i}"] for i in range(2)] == [1, 4]
    for record in corpus.secrets:
        assert sum(d.text.count(record.text) for d in corpus.train) == record.repetitions


def test_per_category_repetitions_reject_unknown_category() -> None:
    import pytest

    from lib.data.corpus import CorpusConfig

    with pytest.raises(ValueError, match="unknown category 'SSN'"):
        CorpusConfig(seed=0, n_background_emails=10, secrets_per_category={"TEL": 1},
                     repetitions={"SSN": [1]}, n_controls_per_category=1)


def test_stage_file_readers_name_line_and_field_never_the_value(tmp_path: Path) -> None:
    """Candidates, QA pairs, forget ids and memorized ids: one InputError line with file and line, no row text."""
    from lib.bench.qa import read_pairs
    from lib.core.io import InputError
    from lib.data.records import forget_candidates, memorized_records, read_candidates

    canary = "CANARY-7781-secret"
    cand = tmp_path / "candidates.jsonl"
    row = {"id": "c1", "text": f"x {canary} y", "secret": canary, "category": "TEL", "copies": 2}
    cand.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "c2", "copies": canary}) + "\n")
    with pytest.raises(InputError, match=r"candidates.jsonl line 2: field 'copies' is a string") as err:
        read_candidates(cand)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "q", "prompt": canary, "answer": 7}) + "\n")
    with pytest.raises(InputError, match=r"pairs.jsonl line 1: field 'answer' is a number") as err2:
        read_pairs(pairs)
    cand.write_text(json.dumps(row) + "\n")
    forget = tmp_path / "forget.json"
    forget.write_text(json.dumps({"ids": ["c1", canary]}))
    with pytest.raises(InputError, match=r"forget.json: 'ids' entry 1 is not a known id") as err3:
        forget_candidates(cand, forget)
    secrets = tmp_path / "secrets.jsonl"
    good = SecretRecord("TEL-0000", "TEL", "tel : ", canary, " .", 3, False).to_dict()
    secrets.write_text(json.dumps(good) + "\n")
    memorized = tmp_path / "memorized.json"
    memorized.write_text(json.dumps({"TEL": ["TEL-0000", "TEL-9"]}))
    with pytest.raises(InputError, match=r"memorized.json: 'TEL' entry 1 is not a known id") as err4:
        memorized_records(memorized, secrets, "TEL")
    secrets.write_text(json.dumps({**good, "category": canary}) + "\n")
    with pytest.raises(InputError, match=r"secrets.jsonl line 1: field 'category' is not an allowed value") as err5:
        read_secrets(secrets)
    assert all(canary not in str(e.value) for e in (err, err2, err3, err4, err5))
