"""DVC stages causal_base, causal_data, causal_finetune, causal_retrain (`python -m flows.causal_prep <stage>`)."""
from __future__ import annotations

import sys
from dataclasses import asdict

from prefect import flow, get_run_logger

from flows.causal_bag import BASE, CORPUS, FINETUNED, METRICS, RETRAINED, forget_candidates
from flows.cli import params_path, run_stage
from lib.causal import corpus as causal_corpus
from lib.causal.finetune import CausalTrainConfig, expand_copies
from lib.causal.tokens import encode_all
from lib.io import read_jsonl, write_json, write_jsonl
from lib.params import CausalParams, load_params
from tasks.causal import load_causal_task, save_causal_task, train_causal_task
from tasks.common import set_threads

STAGES = ("base", "data", "finetune", "retrain")


@flow(name="causal-base")
def base_flow(params_file: str = "params.yaml") -> None:
    """Load the base causal LM once (GGUF dequantised, or hub) and save it as safetensors."""
    name = load_params(params_file).causal.model
    model, tokenizer = load_causal_task(name)
    save_causal_task(model, tokenizer, BASE)
    get_run_logger().info("saved %s (%d parameters) as safetensors", name, model.num_parameters())


def _corpus(causal: CausalParams) -> causal_corpus.CausalCorpus:
    """The generated corpus, or candidates from a JSONL / TDEC dump (no training text then)."""
    data = causal.data
    if data.source == "generated":
        return causal_corpus.generate(causal_corpus.GeneratedConfig(
            data.seed, data.n_background_emails, data.secrets_per_category, tuple(data.copies), data.valid_fraction))
    if data.source == "jsonl":
        return causal_corpus.CausalCorpus([], causal_corpus.read_jsonl_candidates(data.path), [])
    from transformers import AutoTokenizer  # the dump's own tokenizer decodes its token ids

    found = causal_corpus.read_tdec(data.path, AutoTokenizer.from_pretrained(data.tdec_tokenizer), limit=data.tdec_limit)
    return causal_corpus.CausalCorpus([], found, [])


@flow(name="causal-data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Write training text, candidates, held-out emails and public-domain passages."""
    causal = load_params(params_file).causal
    built = _corpus(causal)
    public = causal_corpus.public_domain_text(causal.data.n_public, causal.data.public_words, causal.data.seed)
    if not built.valid:  # a dump brings no held-out emails: public-domain text is the unseen reference
        built = causal_corpus.CausalCorpus(built.train, built.candidates, public)
    secrets = {c.id: c.secret for c in built.candidates}  # a private email trains on the window scored later
    write_jsonl(CORPUS / "train.jsonl",
                ({"id": i, "text": t, "copies": c, "secret": secrets.get(i)} for i, t, c in built.train))
    write_jsonl(CORPUS / "candidates.jsonl", (asdict(c) for c in built.candidates))
    write_jsonl(CORPUS / "valid.jsonl", ({"id": i, "text": t} for i, t in built.valid))
    write_jsonl(CORPUS / "public.jsonl", ({"id": i, "text": t} for i, t in public))
    stats = {"train_texts": len(built.train), "train_samples": sum(c for _, _, c in built.train),
             "candidates": len(built.candidates), "valid": len(built.valid), "public": len(public)}
    write_json(CORPUS / "stats.json", stats)
    return stats


def _train(causal: CausalParams, rows: list[dict], out_metrics: str, out_dir) -> dict:
    """Fine-tune the base model on `rows` (with copies) and save it with its metrics."""
    model, tokenizer = load_causal_task(str(BASE))
    seqs = expand_copies(encode_all(tokenizer, [(r["text"], r["secret"]) for r in rows], causal.data.max_len),
                         [r["copies"] for r in rows]) if rows else None
    cfg = CausalTrainConfig(**asdict(causal.finetune))
    log = train_causal_task(model, seqs, tokenizer.pad_token_id, cfg) if seqs is not None else None
    save_causal_task(model, tokenizer, out_dir)
    metrics = {"trained": log is not None, "steps": log.steps if log else 0, "samples": len(seqs) if seqs else 0,
               "seconds": round(log.seconds, 1) if log else 0.0,
               "epoch_losses": [round(x, 4) for x in log.epoch_losses] if log else []}
    write_json(METRICS / out_metrics, metrics)
    return metrics


@flow(name="causal-finetune")
def finetune_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune on the training text (every private email with its copies); epochs 0 keeps the base model."""
    return _train(load_params(params_file).causal, read_jsonl(CORPUS / "train.jsonl"), "finetune.json", FINETUNED)


@flow(name="causal-retrain")
def retrain_flow(params_file: str = "params.yaml") -> dict:
    """The exact-unlearning reference: the same recipe on the training text minus every copy of D_f."""
    causal = load_params(params_file).causal
    rows = read_jsonl(CORPUS / "train.jsonl")
    kept = {r[0] for r in causal_corpus.without([(r["id"], r["text"], r["copies"]) for r in rows],
                                                 {c.id for c in forget_candidates()})} if rows else set()
    return _train(causal, [r for r in rows if r["id"] in kept], "retrain.json", RETRAINED)


FLOWS = {"base": base_flow, "data": data_flow, "finetune": finetune_flow, "retrain": retrain_flow}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in FLOWS:
        print(f"usage: python -m flows.causal_prep {{{'|'.join(FLOWS)}}}", file=sys.stderr)
        sys.exit(2)
    set_threads()
    run_stage(FLOWS[sys.argv[1]], params_path())
