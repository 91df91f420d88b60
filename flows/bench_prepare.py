"""DVC stage `bench_prepare@<run>`: stop threshold, NeuMuter's neighbours, the original and reference models' scores."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import BENCH_METRICS, BENCH_SETS, bench_finetuned, bench_prepared, bench_reference_model, main
from lib.bench.qa import encode_pairs_file, read_pairs
from lib.bench.suites import BenchConfig, run_suite, suite
from lib.core.io import file_digest, write_json, write_jsonl
from lib.core.params import load_params
from lib.data.neighbours import NeighbourConfig, neighbours
from lib.families.causal import accuracy
from tasks import load_model_task, use_compute
from tasks.bench import score_saved, suite_config
from tasks.finetune import neighbour_mlm


def runs(run: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [suite(run_suite(run)[0]).__name__]


def config(run: str, params_file: str) -> tuple[BenchConfig, Any, NeighbourConfig]:
    """The stage's params: `benchmarks`, the run's suite section, `benchmarks.neighbours`."""
    params = load_params(params_file)
    return (params.get("benchmarks", BenchConfig), suite_config(params, run),
            params.get("benchmarks.neighbours", NeighbourConfig))


def make_neighbours(run: str, nb: NeighbourConfig, max_len: int) -> dict:
    """NeuMuter's neighbours: the MLM fine-tuned on the reference text rewrites every forget pair."""
    texts = [f"{p} {a}" for p, a in zip(*read_pairs(BENCH_SETS / run / "reference.jsonl"))]
    mlm, mlm_tok, steps = neighbour_mlm(nb, texts, max_len)
    forget = [f"{p} {a}" for p, a in zip(*read_pairs(BENCH_SETS / run / "forget.jsonl"))]
    rewritten = neighbours(mlm, mlm_tok, forget, nb.k, nb.ratio, nb.seed)
    write_jsonl(bench_prepared(run) / "neighbours.jsonl",
                ({"forget": i // nb.k, "text": t} for i, t in enumerate(rewritten)))
    return {"mlm_texts": len(texts), "mlm_steps": steps, "neighbours": len(rewritten)}


@flow(name="bench-prepare")
def prepare_flow(run: str, params_file: str = "params.yaml") -> dict:
    """Stop thresholds (the reference model's mean MA on D_f), neighbours, scores of the original and reference."""
    use_compute(params_file)
    bench, cfg, nb = config(run, params_file)
    name = run_suite(run)[0]
    ref, tokenizer = load_model_task(str(bench_reference_model(run)), "causal")
    forget = encode_pairs_file(tokenizer, BENCH_SETS / run / "forget.jsonl", cfg.max_len)
    ma = accuracy(ref, forget, tokenizer.pad_token_id, bench.batch_size)
    limits = {"ma": float(ma.mean()), "el": 1.0, "source": "reference model, mean MA over D_f"}
    write_json(bench_prepared(run) / "thresholds.json", limits)
    # the unlearn stages reach the fine-tuned model through this file: its digest invalidates them
    stats = {"thresholds": limits, "finetuned_digest": file_digest(bench_finetuned(name) / "model.safetensors"),
             "reference_digest": file_digest(bench_reference_model(run) / "model.safetensors"),
             **make_neighbours(run, nb, cfg.max_len)}
    write_json(bench_prepared(run) / "stats.json", stats)
    scored = suite(name)
    ref_scores = score_saved(bench_reference_model(run), BENCH_SETS, run, cfg, bench.batch_size)
    reference = scored.with_reference(ref_scores, ref_scores)  # TOFU: forget quality against itself, 1.0
    write_json(BENCH_METRICS / run / "reference.json", reference)
    original = score_saved(bench_finetuned(name), BENCH_SETS, run, cfg, bench.batch_size)
    write_json(BENCH_METRICS / run / "original.json", scored.with_reference(original, reference))
    get_run_logger().info("%s: MA threshold %.3f, %d neighbours", run, limits["ma"], stats["neighbours"])
    return stats


if __name__ == "__main__":
    main(prepare_flow, check=config)
