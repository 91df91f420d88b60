"""Benchmark: greedy answers that end once every row of a batch has ended (eos / newline) against full max_new.

Usage: python perf/answer_stop.py [--model data/causal/base] [--n 40] [--max-new 40] [--repeats 2]

Prompts: the first --n TOFU forget10 questions as the benchmark track asks them ("Question: ...\\nAnswer:"),
read from --data-root (default ../shared/datasets). Model: a causal LM folder (default: the causal track's
base SmolLM2 saved by `causal_base`). Both sides call lib.bench.qa.greedy_answers' decoding with the same
batches; "full" passes no stop tokens (every batch decodes max_new steps, as before), "stop" passes
answer_stops. Sides alternate; prints medians, the ratio and whether every answer is identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lib.bench.qa as qa  # noqa: E402
from lib.bench.tofu import tofu_prompt  # noqa: E402
from lib.core.models import load_model  # noqa: E402


def answers(model, tokenizer, prompts: list[str], max_new: int, stop: bool) -> tuple[float, list[str]]:
    """Wall seconds and the greedy answers, with or without the early end."""
    real = qa.answer_stops
    if not stop:
        qa.answer_stops = lambda tok: frozenset()  # the decode runs max_new steps per batch, as before
    try:
        start = time.perf_counter()
        out = qa.greedy_answers(model, tokenizer, prompts, max_new=max_new, max_len=128, batch_size=16)
        return time.perf_counter() - start, out
    finally:
        qa.answer_stops = real


def main() -> None:
    """Time both sides, print medians, the ratio and the equality check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/causal/base")
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--max-new", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    questions = Path(args.data_root) / "tofu" / "forget10.json"
    for path, fix in ((Path(args.model), "run `dvc repro causal_base` first, or pass --model"),
                      (questions, "pass --data-root, the folder holding tofu/forget10.json")):
        if not path.exists():
            print(f"error: {path} does not exist; {fix}", file=sys.stderr)
            sys.exit(2)
    rows = json.loads(questions.read_text())
    if isinstance(rows, dict):
        rows = rows.get("data", rows)
    prompts = [tofu_prompt(r["question"]) for r in rows[: args.n]]
    model, tokenizer = load_model(args.model, "causal")
    qa.answer_stops(tokenizer)  # decode the vocabulary once, outside the timings
    times: dict[str, list[float]] = {"full": [], "stop": []}
    out: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for side in times:
            seconds, out[side] = answers(model, tokenizer, prompts, args.max_new, side == "stop")
            times[side].append(seconds)
    med = {side: statistics.median(v) for side, v in times.items()}
    print(f"model={args.model} prompts={len(prompts)} max_new={args.max_new} batch=16 repeats={args.repeats}")
    for side in times:
        print(f"{side:5s} median {med[side]:6.2f} s  runs {[round(t, 2) for t in times[side]]}")
    print(f"ratio full / stop: {med['full'] / med['stop']:.2f}x; answers identical: {out['full'] == out['stop']}")


if __name__ == "__main__":
    main()
