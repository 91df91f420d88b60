"""DVC stage `data`: generate the email corpus with planted secrets (data/corpus/)."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import params_path, run_stage
from lib.params import load_params
from tasks.data import generate_corpus_task, load_enron_task, plant_task, write_corpus_task

OUT = Path("data/corpus")


@flow(name="data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Generate the corpus (or plant secrets into Enron emails) and write it under data/corpus."""
    params = load_params(params_file).data
    if params.source == "enron":  # real emails as background, generated secrets planted with ground truth
        train, valid = load_enron_task(params.enron_path, params.seed)
        corpus = plant_task(train, valid, params)
    else:
        corpus = generate_corpus_task(params)
    write_corpus_task(corpus, OUT)
    get_run_logger().info("corpus: %d train, %d valid emails, %d secrets, %d controls",
                          len(corpus.train), len(corpus.valid), len(corpus.secrets), len(corpus.controls))
    return corpus.stats


if __name__ == "__main__":
    run_stage(data_flow, params_path())
