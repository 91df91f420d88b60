"""Benchmark: batched Integrated Gradients vs the one-(row, layer, step)-per-call loop.

Usage: python perf/ig.py [--steps 20] [--repeats 5] [--loop-repeats 5] [--batch 128] [--threads N]

Loop (`integrated_gradients_loop`): the straightforward computation, the way DEPN's public
code works: one (row, layer, step) per forward/backward call, every call a full model
forward (embeddings, every block, LM head) and a backward to the injected activation.
Batched (`integrated_gradients`): all (row, layer, step) combos in chunks of --batch rows,
skipping what the injection cannot change (blocks below the layer replay their clean
outputs, FFNs run at the scored position only; see lib/core/ig.py). Both sides share the
padding, frozen parameters, injection hook and objective code.
Model: the embedded MiniLM as a masked LM; inputs: 8 phone-number sentences, one digit
masked in each. Both sides run at the same torch thread count, by default every core as
the pipeline does (tasks.use_compute with compute.threads: null). Runs alternate between the two sides so
load from other processes hits both alike. Prints the median of the repeats, the max
relative difference of the attributions (must be <= 1e-4) and the speed ratio
loop / batched (target >= 10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from lib.core.adapter import FFNAdapter  # noqa: E402
from lib.core.ig import IGConfig, integrated_gradients, integrated_gradients_loop  # noqa: E402
from lib.families.masked import MaskedRows  # noqa: E402
from lib.core.models import load_model  # noqa: E402

NUMBERS = ("5 5 5 1 2 3 4 5 6 7", "2 0 2 8 7 3 9 1 4 6", "7 1 3 5 5 0 9 8 2 4", "4 1 5 6 6 2 0 3 7 8",
           "8 0 0 9 1 2 5 5 3 1", "3 1 2 4 4 8 6 0 9 7", "6 4 6 2 7 7 1 8 3 0", "9 7 2 3 0 5 4 6 1 2")
TEMPLATES = ("my phone number is {} .", "you can call me at {} .", "dial {} to call me .",
             "contact me at {} .")


def phone_rows(tokenizer: PreTrainedTokenizerBase) -> MaskedRows:
    """8 template sentences, right-padded, with digit i % 10 of sentence i masked."""
    encoded = [tokenizer(TEMPLATES[i % len(TEMPLATES)].format(n))["input_ids"] for i, n in enumerate(NUMBERS)]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)  # (R, T)
    mask = torch.zeros_like(ids)
    positions, gold = [], []
    for i, row in enumerate(encoded):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        digits = [t for t, tok in enumerate(row) if tokenizer.convert_ids_to_tokens(tok).isdigit()]
        positions.append(digits[i % len(digits)])
        gold.append(int(ids[i, positions[-1]]))
        ids[i, positions[-1]] = tokenizer.mask_token_id
    n = len(encoded)
    return MaskedRows(ids, mask, torch.tensor(positions), torch.tensor(gold),
                      record_index=torch.arange(n), token_index=torch.zeros(n, dtype=torch.long))


def timed(fn: Callable[[], Tensor]) -> tuple[float, float, Tensor]:
    """Wall-clock and process-CPU seconds of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def interleaved(batched: Callable[[], Tensor], loop: Callable[[], Tensor], repeats: int,
                loop_repeats: int) -> tuple[dict[str, list[float]], Tensor, Tensor]:
    """Alternate batched and loop runs so load from other processes hits both sides alike."""
    times: dict[str, list[float]] = {"batched": [], "batched_cpu": [], "loop": [], "loop_cpu": []}
    out_b, out_l = torch.empty(0), torch.empty(0)
    for i in range(max(repeats, loop_repeats)):
        if i < repeats:
            wall, cpu, out_b = timed(batched)
            times["batched"].append(wall)
            times["batched_cpu"].append(cpu)
        if i < loop_repeats:
            wall, cpu, out_l = timed(loop)
            times["loop"].append(wall)
            times["loop_cpu"].append(cpu)
    return times, out_b, out_l


def report(times: dict[str, list[float]], rel: float) -> None:
    """Print wall-clock medians (the measure), CPU medians (robust to other load) and ratios."""
    med = {key: statistics.median(values) for key, values in times.items()}
    for side in ("batched", "loop"):
        print(f"{side + ' IG:':12s} median {med[side]:.3f} s over {len(times[side])} runs "
              f"{[round(t, 3) for t in times[side]]}; process CPU median {med[side + '_cpu']:.3f} s")
    print(f"max relative difference: {rel:.2e} (must be <= 1e-4)")
    print(f"speed ratio loop/batched: {med['loop'] / med['batched']:.1f}x wall-clock, "
          f"{med['loop_cpu'] / med['batched_cpu']:.1f}x process CPU (target >= 10x)")


def main(argv: list[str] | None = None) -> None:
    """Time both engines and print medians, the max relative difference and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))  # as the pipeline
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the newly initialised MLM head warning is expected
    model, tokenizer = load_model("embedded:minilm", "masked", seed=0)
    adapter = FFNAdapter.for_model(model)
    rows = phone_rows(tokenizer)
    cfg = IGConfig(steps=args.steps, max_rows_per_batch=args.batch)
    integrated_gradients(model, adapter, rows, cfg)  # warm-up: first-call allocations
    load = os.getloadavg()[0]
    times, batched, loop = interleaved(
        lambda: integrated_gradients(model, adapter, rows, cfg),
        lambda: integrated_gradients_loop(model, adapter, rows, cfg), args.repeats, args.loop_repeats)
    rel = float((batched - loop).abs().max() / loop.abs().max())
    n_combos = len(rows) * adapter.n_layers * args.steps
    print(f"model=embedded:minilm rows={tuple(rows.input_ids.shape)} layers={adapter.n_layers} "
          f"d_ff={adapter.d_ff} steps={args.steps} combos={n_combos} batch={args.batch} threads={args.threads} "
          f"load average {load:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    report(times, rel)


if __name__ == "__main__":
    main()
