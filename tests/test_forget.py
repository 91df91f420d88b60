"""The retrain reference's corpus: exactly the forget samples are removed."""
from __future__ import annotations

from lib.data.corpus import CorpusConfig, generate_corpus
from lib.data.forget import remove_samples
from lib.data.records import Document


def _corpus():
    """A small generated corpus with repeated secrets in every category."""
    return generate_corpus(CorpusConfig(seed=3, n_background_emails=200,
                                        secrets_per_category={"TEL": 4, "NAME": 4, "RANDOM": 2},
                                        repetitions=(2, 4), n_controls_per_category=8))


def test_removes_every_occurrence_of_forgotten_secrets_and_nothing_else() -> None:
    corpus = _corpus()
    forget = [s for s in corpus.secrets if s.category in ("TEL", "RANDOM")][:3]
    keep = [s for s in corpus.secrets if s not in forget]
    docs, removal = remove_samples(corpus.train, forget)
    text = "\n".join(d.text for d in docs)
    assert all(s.secret not in text for s in forget)  # the private string is gone entirely
    assert removal.occurrences == {s.id: s.repetitions for s in forget}
    for s in keep:  # every other secret keeps all its samples
        assert sum(d.text.count(s.text) for d in docs) == s.repetitions
    changed = {d.id for d in corpus.train if any(s.text in d.text for s in forget)}
    assert removal.documents_changed == len(changed)
    before = {d.id: d.text for d in corpus.train}
    for doc in docs:  # untouched emails are byte-identical; changed ones lost only the sentences
        if doc.id not in changed:
            assert doc.text == before[doc.id]
        else:
            assert len(doc.text.split()) == len(before[doc.id].split()) - sum(
                before[doc.id].count(s.text) * len(s.text.split()) for s in forget)


def test_no_records_is_identity_and_emptied_emails_are_dropped() -> None:
    corpus = _corpus()
    docs, removal = remove_samples(corpus.train, [])
    assert docs == list(corpus.train) and removal.documents_changed == 0
    secret = corpus.secrets[0]
    only = [Document("x", secret.text), Document("y", "hello there .")]
    docs, removal = remove_samples(only, [secret])
    assert [d.id for d in docs] == ["y"] and removal.occurrences == {secret.id: 1}
