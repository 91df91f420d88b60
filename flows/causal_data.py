"""DVC stage `causal_data`: training text, candidates, held-out emails and public-domain passages (data/causal/corpus/)."""
from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from flows import CAUSAL_CORPUS, main
from lib.core.io import write_json, write_jsonl
from lib.core.models import load_tokenizer
from lib.core.params import load_params
from lib.data import emails
from lib.data.emails import EmailsConfig


def config(params_file: str) -> EmailsConfig:
    """The stage's params: `causal.data`."""
    return load_params(params_file).get("causal.data", EmailsConfig)


def check(params_file: str) -> EmailsConfig:
    """The params, and a JSONL or TDEC source read and checked: bad input stops the stage before its flow run."""
    cfg = config(params_file)
    if cfg.source == "jsonl":
        emails.read_jsonl_candidates(cfg.path)
    elif cfg.source == "tdec":
        emails.check_tdec(cfg.path, load_tokenizer(cfg.tdec_tokenizer), limit=cfg.tdec_limit)
    return cfg


def corpus(cfg: EmailsConfig) -> emails.CausalCorpus:
    """The generated corpus, or candidates from a JSONL / TDEC dump (no training text then)."""
    if cfg.source == "generated":
        return emails.generate(cfg.generated())
    if cfg.source == "jsonl":
        return emails.CausalCorpus([], emails.read_jsonl_candidates(cfg.path), [])
    # the dump's own tokenizer decodes its token ids
    found = emails.read_tdec(cfg.path, load_tokenizer(cfg.tdec_tokenizer), limit=cfg.tdec_limit)
    return emails.CausalCorpus([], found, [])


@flow(name="causal-data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Write training text, candidates, held-out emails and public-domain passages."""
    cfg = config(params_file)
    built = corpus(cfg)
    public = emails.public_domain_text(cfg.n_public, cfg.public_words, cfg.seed)
    if not built.valid:  # a dump brings no held-out emails: public-domain text is the unseen reference
        built = emails.CausalCorpus(built.train, built.candidates, public)
    secrets = {c.id: c.secret for c in built.candidates}  # a private email trains on the window scored later
    write_jsonl(CAUSAL_CORPUS / "train.jsonl",
                ({"id": i, "text": t, "copies": c, "secret": secrets.get(i)} for i, t, c in built.train))
    write_jsonl(CAUSAL_CORPUS / "candidates.jsonl", (asdict(c) for c in built.candidates))
    write_jsonl(CAUSAL_CORPUS / "valid.jsonl", ({"id": i, "text": t} for i, t in built.valid))
    write_jsonl(CAUSAL_CORPUS / "public.jsonl", ({"id": i, "text": t} for i, t in public))
    stats = {"train_texts": len(built.train), "train_samples": sum(c for _, _, c in built.train),
             "candidates": len(built.candidates), "valid": len(built.valid), "public": len(public)}
    write_json(CAUSAL_CORPUS / "stats.json", stats)
    return stats


if __name__ == "__main__":
    main(data_flow, check=check)
