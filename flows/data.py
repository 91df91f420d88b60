"""DVC stage `data`: generate the email corpus with planted secrets (data/corpus/)."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import params_path, run_stage
from lib.params import load_params
from tasks.data import generate_corpus_task, write_corpus_task

OUT = Path("data/corpus")


@flow(name="data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Generate (or load) the corpus and write it under data/corpus."""
    params = load_params(params_file)
    if params.data.source != "generated":
        raise ValueError(f"data.source = {params.data.source!r} needs secrets with ground truth; "
                         "only 'generated' feeds the memorization stages (the Enron loader is lib/data/enron.py)")
    corpus = generate_corpus_task(params.data)
    write_corpus_task(corpus, OUT)
    get_run_logger().info("corpus: %d train, %d valid emails, %d secrets, %d controls",
                          len(corpus.train), len(corpus.valid), len(corpus.secrets), len(corpus.controls))
    return corpus.stats


if __name__ == "__main__":
    run_stage(data_flow, params_path())
