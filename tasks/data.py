"""Prefect tasks of the data stage."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from lib.data.corpus import Corpus, CorpusConfig, generate_corpus, write_corpus
from lib.params import DataParams


@task(name="generate-corpus")
def generate_corpus_task(params: DataParams) -> Corpus:
    """Generate the seeded email corpus with planted secrets and controls."""
    cfg = CorpusConfig(
        seed=params.seed, n_background_emails=params.n_background_emails,
        secrets_per_category=dict(params.secrets_per_category), repetitions=tuple(params.repetitions),
        n_controls_per_category=params.n_controls_per_category, valid_fraction=params.valid_fraction,
        max_secret_token_fraction=params.max_secret_token_fraction,
    )
    return generate_corpus(cfg)


@task(name="write-corpus")
def write_corpus_task(corpus: Corpus, out_dir: Path) -> None:
    """Write the corpus files atomically."""
    write_corpus(corpus, out_dir)
