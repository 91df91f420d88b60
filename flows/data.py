"""DVC stage `data`: generate the email corpus with planted secrets (data/corpus/)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CORPUS, main
from lib.core.params import load_params
from lib.data import enron
from lib.data.corpus import CorpusConfig
from tasks.data import generate_corpus_task, load_enron_task, plant_task, write_corpus_task


def config(params_file: str) -> CorpusConfig:
    """The stage's params: section `data`."""
    return load_params(params_file).get("data", CorpusConfig)


def check(params_file: str) -> CorpusConfig:
    """The params, and an Enron source's folder or archive: bad input stops the stage before its flow run."""
    cfg = config(params_file)
    if cfg.source == "enron":
        enron.check_source(cfg.enron_path)
    return cfg


@flow(name="data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Generate the corpus (or plant secrets into Enron emails) and write it under data/corpus."""
    cfg = config(params_file)
    if cfg.source == "enron":  # real emails as background, generated secrets planted with ground truth
        train, valid = load_enron_task(cfg.enron_path, cfg.seed)
        corpus = plant_task(train, valid, cfg)
    else:
        corpus = generate_corpus_task(cfg)
    write_corpus_task(corpus, CORPUS)
    get_run_logger().info("corpus: %d train, %d valid emails, %d secrets, %d controls",
                          len(corpus.train), len(corpus.valid), len(corpus.secrets), len(corpus.controls))
    return corpus.stats


if __name__ == "__main__":
    main(data_flow, check=check)
