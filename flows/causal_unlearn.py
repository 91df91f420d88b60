"""DVC stages causal_neighbours and causal_unlearn@<method> (`python -m flows.causal_unlearn neighbours|<method>`)."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace

import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.causal_bag import CORPUS, FINETUNED, NEIGHBOURS, UNLEARNED, encode_candidates, forget_candidates, thresholds
from flows.cli import params_path, run_stage
from lib.adapter import FFNAdapter
from lib.causal.batching import Sequences, of
from lib.causal.methods import CAUSAL_METHODS, get_causal_method
from lib.causal.methods.base import Thresholds, UnlearnInputs, UnlearnReport
from lib.causal.metrics import changed_parameters
from lib.causal.neighbours import neighbours
from lib.causal.tokens import encode_all
from lib.finetune import TrainConfig
from lib.io import read_jsonl, write_json, write_jsonl
from lib.params import CausalParams, load_params, section
from tasks.causal import load_causal_task, save_causal_task
from tasks.common import set_threads
from tasks.finetune import train_task
from tasks.models import load_model_task, save_model_task


@flow(name="causal-neighbours")
def neighbours_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune the MLM on the training text minus D_f, then rewrite each forget sample K times."""
    causal = load_params(params_file).causal
    nb, forget = causal.neighbours, forget_candidates()
    drop = {c.id for c in forget}
    texts = [r["text"] for r in read_jsonl(CORPUS / "train.jsonl") if r["id"] not in drop]
    source = "training text minus D_f" if texts else "public-domain text"  # dumps bring no training text
    texts = texts or [r["text"] for r in read_jsonl(CORPUS / "public.jsonl")]
    mlm, mlm_tok = load_model_task(nb.mlm, nb.seed)
    cfg = TrainConfig(nb.mlm_epochs, nb.mlm_batch_size, nb.mlm_learning_rate, 0.0, 0.06, 0.15, 128, nb.seed)
    log = train_task(mlm, mlm_tok, texts, cfg) if nb.mlm_epochs else None
    _, tokenizer = load_causal_task(str(FINETUNED))
    windows = [tokenizer.decode(ids) for ids in encode_candidates(tokenizer, forget, causal.data.max_len).ids]
    rewritten = neighbours(mlm, mlm_tok, windows, nb.k, nb.ratio, nb.seed)
    write_jsonl(NEIGHBOURS / "neighbours.jsonl",
                ({"forget_id": forget[i // nb.k].id, "text": t} for i, t in enumerate(rewritten)))
    save_model_task(mlm, mlm_tok, NEIGHBOURS / "mlm")
    stats = {"mlm_trained_on": source, "mlm_texts": len(texts),
             "mlm_steps": log.steps if log else 0, "neighbours": len(rewritten)}
    write_json(NEIGHBOURS / "stats.json", stats)
    return stats


def retain_sequences(tokenizer, causal: CausalParams) -> Sequences:
    """D_r: the first `retain_samples` background (secret-free) training emails; public text for dumps."""
    rows = [r for r in read_jsonl(CORPUS / "train.jsonl") if not r["secret"]]
    rows = rows or read_jsonl(CORPUS / "public.jsonl")  # a JSONL / TDEC dump brings no training text
    texts = [(r["text"], None) for r in rows[: causal.retain_samples]]
    return encode_all(tokenizer, texts, causal.data.max_len)


def unlearn_inputs(tokenizer, causal: CausalParams) -> UnlearnInputs:
    """D_f, its neighbours, D_r and the Eq. 17 thresholds as token sequences."""
    forget = encode_candidates(tokenizer, forget_candidates(), causal.data.max_len)
    rows = read_jsonl(NEIGHBOURS / "neighbours.jsonl")
    near = [tokenizer(r["text"], add_special_tokens=False)["input_ids"][: causal.data.max_len] for r in rows]
    limits = thresholds()
    return UnlearnInputs(forget, Thresholds(limits["ma"], limits["el"]), tokenizer.pad_token_id,
                         neighbours=of(near), retain=retain_sequences(tokenizer, causal),
                         batch_size=causal.memorized.batch_size)


@task(name="unlearn", task_run_name="unlearn-{name}", cache_policy=NO_CACHE)
def unlearn_task(name: str, model, inputs: UnlearnInputs, cfg, seed: int) -> tuple[UnlearnReport, float]:
    """Run one method in place; fill in how many parameters it changed; return (report, seconds)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}  # tied weights counted once
    start = time.perf_counter()
    report = get_causal_method(name).run(model, FFNAdapter.for_model(model), inputs, cfg, seed)
    seconds = time.perf_counter() - start
    changed, total = changed_parameters(before, {n: p.detach() for n, p in model.named_parameters()})
    return replace(report, changed=changed, total=total), seconds


@flow(name="causal-unlearn")
def unlearn_flow(name: str, params_file: str = "params.yaml") -> dict:
    """Unlearn D_f from the fine-tuned model with one method and save the edited model."""
    params = load_params(params_file)
    causal = params.causal
    model, tokenizer = load_causal_task(str(FINETUNED))
    torch.manual_seed(params.seed)
    report, seconds = unlearn_task(name, model, unlearn_inputs(tokenizer, causal), getattr(causal.methods, name),
                                   params.seed)
    save_causal_task(model, tokenizer, UNLEARNED / name)
    out = {**asdict(report), "seconds": round(seconds, 2), "config": section(params, f"causal.methods.{name}")}
    write_json(UNLEARNED / name / "report.json", out)
    get_run_logger().info("%s: reached=%s %s=%s in %.1f s, %d of %d parameters changed", name, report.reached,
                          report.strength_name, report.strength, seconds, report.changed, report.total)
    return out


def _check(name: str) -> None:
    """Unknown method names fail before any work."""
    get_causal_method(name)


if __name__ == "__main__":
    set_threads()
    arg = sys.argv[1] if len(sys.argv) == 2 else ""
    if arg == "neighbours":
        run_stage(neighbours_flow, params_path())
    elif arg:
        run_stage(unlearn_flow, arg, params_path(), check=lambda: _check(arg))
    else:
        print(f"usage: python -m flows.causal_unlearn neighbours|{{{'|'.join(CAUSAL_METHODS)}}}", file=sys.stderr)
        sys.exit(2)
