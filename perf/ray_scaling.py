"""Benchmark: the ig stage's tasks on Ray (prefect-ray) with 2 workers against 1, and against the local runner.

Usage: python perf/ray_scaling.py [--sentences 32] [--digits 5] [--steps 20] [--repeats 2]

Workload: what the `ig` stage runs (tasks.ig.ig_stats: one content-cached Prefect task per secret, here
32 phone-number sentences with 5 digits masked one at a time = 160 rows, m = 20) on the embedded MiniLM.
Sides, each a whole flow run (Ray start and stop included, as a stage pays them), in a temporary folder
whose task cache is emptied before every run, alternated so other load hits every side alike:
  local-2t   compute.runner local, 2 torch threads (the CPU default on 2 cores)
  local-1t   compute.runner local, 1 thread
  ray-1w     compute.runner ray, a local Ray with 1 worker of 1 thread
  ray-2w     compute.runner ray, 2 workers of 1 thread each
Prints the median wall time of each side, the speed-ups ray-2w / ray-1w and ray-2w / local-2t, and
whether every side's IG equals the local-1t side's bit for bit.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(tempfile.mkdtemp(prefix="ray-scaling-"))  # before `tasks` is imported: its caches live in the cwd

import torch  # noqa: E402
from prefect import flow  # noqa: E402
from transformers import PreTrainedTokenizerBase  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import tasks  # noqa: E402
from lib.core.ig import IGConfig  # noqa: E402
from lib.core.io import file_digest  # noqa: E402
from lib.core.models import ComputeConfig, load_model, save_model  # noqa: E402
from lib.families.masked import MaskedRows  # noqa: E402
from tasks.ig import ig_stats  # noqa: E402

from ig import NUMBERS, TEMPLATES  # noqa: E402  (perf/ig.py, beside this script: the same sentences)

SIDES = {"local-2t": ComputeConfig(device="cpu", threads=2), "local-1t": ComputeConfig(device="cpu", threads=1),
         "ray-1w": ComputeConfig(device="cpu", threads=1, runner="ray", workers=1),
         "ray-2w": ComputeConfig(device="cpu", threads=1, runner="ray", workers=2)}


def phone_rows(tokenizer: PreTrainedTokenizerBase, sentences: int, digits: int) -> MaskedRows:
    """`sentences` template sentences (one record each), each with its first `digits` digits masked one per row."""
    ids_rows, positions, gold, records = [], [], [], []
    for s in range(sentences):
        text = TEMPLATES[s % len(TEMPLATES)].format(NUMBERS[(s // len(TEMPLATES)) % len(NUMBERS)])
        row = tokenizer(text)["input_ids"]
        places = [t for t, tok in enumerate(row) if tokenizer.convert_ids_to_tokens(tok).isdigit()][:digits]
        for place in places:
            masked = list(row)
            masked[place] = tokenizer.mask_token_id
            ids_rows.append(masked), positions.append(place), gold.append(row[place]), records.append(s)
    width = max(len(r) for r in ids_rows)
    ids = torch.full((len(ids_rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (R, T)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(ids_rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return MaskedRows(ids, mask, torch.tensor(positions), torch.tensor(gold), record_index=torch.tensor(records),
                      token_index=torch.zeros(len(ids_rows), dtype=torch.long))


@flow(name="ray-scaling")
def ig_run(ref: tasks.ModelRef, rows: MaskedRows, cfg: IGConfig) -> torch.Tensor:
    """The ig stage's work for one category: one cached task per record, run by the flow's task runner."""
    return ig_stats(ref, rows, rows.record_index, cfg, "perf")[0]


def run_side(compute: ComputeConfig, ref: tasks.ModelRef, rows: MaskedRows, cfg: IGConfig) -> tuple[float, torch.Tensor]:
    """One whole flow run of a side with an empty task cache: its wall time and its IG."""
    for record in Path(".cache/prefect-results").glob("ig-shard-*"):
        record.unlink()
    shutil.rmtree(".cache/store", ignore_errors=True)
    tasks.set_compute(compute)
    start = time.perf_counter()
    scores = ig_run.with_options(task_runner=tasks.task_runner())(ref, rows, cfg)
    return time.perf_counter() - start, scores


def main(argv: list[str] | None = None) -> None:
    """Time every side, print medians, speed-ups and the bit-for-bit check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--digits", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()  # the newly initialised MLM head warning is expected
    model, tokenizer = load_model("embedded:minilm", "masked", seed=0)
    save_model(model, tokenizer, Path("model"))  # Ray workers load it from disk, as in the pipeline
    ref = tasks.ModelRef(str(Path("model").resolve()), "masked", file_digest(Path("model")))
    rows, cfg = phone_rows(tokenizer, args.sentences, args.digits), IGConfig(steps=args.steps)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    results: dict[str, torch.Tensor] = {}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for side, compute in SIDES.items():
            tasks.share_model(ref, load_model(ref.path, "masked")[0])  # the local sides reuse the stage's model
            seconds, results[side] = run_side(compute, ref, rows, cfg)
            times[side].append(seconds)
    med = {side: statistics.median(values) for side, values in times.items()}
    print(f"model=embedded:minilm rows={len(rows)} records={args.sentences} steps={args.steps} "
          f"repeats={args.repeats} cpus={len(os.sched_getaffinity(0))} load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    for side in SIDES:
        print(f"{side:9s} median {med[side]:7.2f} s  runs {[round(t, 2) for t in times[side]]}")
    print(f"speed-up ray-2w / ray-1w:   {med['ray-1w'] / med['ray-2w']:.2f}x (2 workers over 1)")
    print(f"speed-up ray-2w / local-2t: {med['local-2t'] / med['ray-2w']:.2f}x (Ray's 2 workers over the CPU default)")
    same = {side: torch.equal(results[side], results["local-1t"]) for side in SIDES}
    print(f"IG equal to local-1t bit for bit: {same}")


if __name__ == "__main__":
    main()
