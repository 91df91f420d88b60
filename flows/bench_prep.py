"""DVC stages bench_data, bench_finetune@<suite>, bench_reference@<run>, bench_prepare@<run>.

`python -m flows.bench_prep data | finetune <suite> | reference <run> | prepare <run>`
"""
from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from flows.bench_bag import METRICS, SETS, encode, finetuned, pairs, prepared, reference, suite_params
from flows.bench_data import write_sets
from flows.bench_eval import score_model, with_reference, with_reference_self
from flows.causal_bag import BASE
from flows.cli import params_path, run_stage
from lib.causal.batching import accuracy
from lib.causal.finetune import CausalTrainConfig
from lib.causal.neighbours import neighbours
from lib.finetune import TrainConfig
from lib.io import file_digest, write_json, write_jsonl
from lib.bench.suites import check_suite
from lib.params import load_params, run_suite
from tasks.causal import load_causal_task, save_causal_task, train_causal_task
from tasks.common import set_threads
from tasks.finetune import train_task
from tasks.models import load_model_task


@flow(name="bench-data")
def data_flow(params_file: str = "params.yaml") -> dict:
    """Load TOFU / LUME (hub or data_root), cut the CPU subsets, write every run's sets."""
    return write_sets(load_params(params_file).benchmarks)


def _train(rows_file, max_len: int, cfg: CausalTrainConfig, out_dir, metrics_file) -> dict:
    """Fine-tune the base causal LM on a pairs file and save it with its metrics."""
    model, tokenizer = load_causal_task(str(BASE))
    seqs = encode(tokenizer, rows_file, max_len)
    log = train_causal_task(model, seqs, tokenizer.pad_token_id, cfg)
    save_causal_task(model, tokenizer, out_dir)
    metrics = {"samples": len(seqs), "steps": log.steps, "seconds": round(log.seconds, 1),
               "epoch_losses": [round(x, 4) for x in log.epoch_losses]}
    write_json(metrics_file, metrics)
    return metrics


@flow(name="bench-finetune")
def finetune_flow(suite: str, params_file: str = "params.yaml") -> dict:
    """Fine-tune the base model on the suite's full training set (forget + retain)."""
    sp = suite_params(load_params(params_file).benchmarks, suite)
    return _train(SETS / suite / "train.jsonl", sp.max_len, sp.finetune, finetuned(suite),
                  METRICS / suite / "finetune.json")


@flow(name="bench-reference")
def reference_flow(run: str, params_file: str = "params.yaml") -> dict:
    """The run's reference: the same recipe on the training set minus the run's forget set (TOFU's retain99 ...)."""
    sp = suite_params(load_params(params_file).benchmarks, run)
    return _train(SETS / run / "reference.jsonl", sp.max_len, sp.finetune, reference(run),
                  METRICS / run / "reference_train.json")


def _neighbours(run: str, params_file: str) -> dict:
    """NeuMuter's neighbours: the MLM fine-tuned on the reference text rewrites every forget pair."""
    bench = load_params(params_file).benchmarks
    nb, sp = bench.neighbours, suite_params(bench, run)
    texts = [f"{p} {a}" for p, a in zip(*pairs(SETS / run / "reference.jsonl"))]
    mlm, mlm_tok = load_model_task(nb.mlm, nb.seed)
    cfg = TrainConfig(nb.mlm_epochs, nb.mlm_batch_size, nb.mlm_learning_rate, 0.0, 0.06, 0.15, sp.max_len, nb.seed)
    log = train_task(mlm, mlm_tok, texts, cfg) if nb.mlm_epochs else None
    forget = [f"{p} {a}" for p, a in zip(*pairs(SETS / run / "forget.jsonl"))]
    rewritten = neighbours(mlm, mlm_tok, forget, nb.k, nb.ratio, nb.seed)
    write_jsonl(prepared(run) / "neighbours.jsonl", ({"forget": i // nb.k, "text": t} for i, t in enumerate(rewritten)))
    return {"mlm_texts": len(texts), "mlm_steps": log.steps if log else 0, "neighbours": len(rewritten)}


@flow(name="bench-prepare")
def prepare_flow(run: str, params_file: str = "params.yaml") -> dict:
    """Stop thresholds (the reference model's mean MA on D_f), neighbours, scores of the original and reference."""
    bench = load_params(params_file).benchmarks
    suite, sp = run_suite(run)[0], suite_params(bench, run)
    ref, tokenizer = load_causal_task(str(reference(run)))
    forget = encode(tokenizer, SETS / run / "forget.jsonl", sp.max_len)
    ma = accuracy(ref, forget, tokenizer.pad_token_id, bench.batch_size)
    limits = {"ma": float(ma.mean()), "el": 1.0, "source": "reference model, mean MA over D_f"}
    write_json(prepared(run) / "thresholds.json", limits)
    # the unlearn stages reach the fine-tuned model through this file: its digest invalidates them
    stats = {"thresholds": limits, "finetuned_digest": file_digest(finetuned(suite) / "model.safetensors"),
             "reference_digest": file_digest(reference(run) / "model.safetensors"), **_neighbours(run, params_file)}
    write_json(prepared(run) / "stats.json", stats)
    write_json(METRICS / run / "reference.json", with_reference_self(score_model(reference(run), run, bench), run))
    write_json(METRICS / run / "original.json", with_reference(score_model(finetuned(suite), run, bench), run))
    get_run_logger().info("%s: MA threshold %.3f, %d neighbours", run, limits["ma"], stats["neighbours"])
    return stats


def _main(argv: list[str]) -> None:
    """Dispatch `data`, `finetune <suite>`, `reference <run>`, `prepare <run>`."""
    flows = {"finetune": finetune_flow, "reference": reference_flow, "prepare": prepare_flow}
    if argv == ["data"]:
        run_stage(data_flow, params_path())
    elif len(argv) == 2 and argv[0] in flows:
        check = (lambda: check_suite(argv[1])) if argv[0] == "finetune" else (lambda: run_suite(argv[1]))
        run_stage(flows[argv[0]], argv[1], params_path(), check=check)
    else:
        print("usage: python -m flows.bench_prep data | finetune {tofu|lume} | reference <run> | prepare <run>",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    set_threads()
    _main(sys.argv[1:])
