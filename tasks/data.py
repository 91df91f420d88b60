"""Prefect tasks of the data stage."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lib.core.io import MissingInput
from lib.data.corpus import Corpus, CorpusConfig, generate_corpus, plant_into_documents, write_corpus
from lib.data.enron import load_enron, load_enron_tarball
from lib.data.records import Document


@task(name="generate-corpus", cache_policy=NO_CACHE)
def generate_corpus_task(cfg: CorpusConfig) -> Corpus:
    """Generate the seeded email corpus with planted secrets and controls."""
    return generate_corpus(cfg)


@task(name="load-enron", cache_policy=NO_CACHE)  # no retries: a local file that fails to load fails again
def load_enron_task(path: str | None, seed: int) -> tuple[list[Document], list[Document]]:
    """Real Enron emails (maildir folder or .tar.gz) with DEPN preprocessing: (train, valid).

    DEPN's test split is not used by this pipeline, so it joins the training text.
    """
    if not path or not Path(path).exists():
        raise MissingInput(f"data.enron_path = {path!r} does not exist (a maildir folder or the .tar.gz)")
    loader = load_enron_tarball if Path(path).is_file() else load_enron
    train, valid, test = loader(path, seed=seed)
    return train + test, valid


@task(name="plant-secrets", cache_policy=NO_CACHE)
def plant_task(train: list[Document], valid: list[Document], cfg: CorpusConfig) -> Corpus:
    """Plant the generated secrets into real emails."""
    return plant_into_documents(train, valid, cfg)


@task(name="write-corpus", cache_policy=NO_CACHE)
def write_corpus_task(corpus: Corpus, out_dir: Path) -> None:
    """Write the corpus files atomically."""
    write_corpus(corpus, out_dir)
