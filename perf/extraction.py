"""Benchmark: EL_n's greedy continuations, one decode per prefix vs one per greedy miss (lib.families.memorization).

Usage: python perf/extraction.py [--model DIR] [--samples 16] [--length 64] [--n 10] [--memorized 0.5]
                                  [--batch 16] [--threads 1] [--seed 0]

Per prefix (the straightforward way, as the paper defines EL_n): for every sample and every prefix length
t = 1..T-n, decode the rest of the sample greedily (batched, KV cache: lib greedy_continuations).
Shared (what the pipeline runs): one teacher-forced forward per sample finds where the model's greedy token
misses the true one; a continuation follows the true tokens up to its first miss and one decode per miss
serves every prefix that reaches it. Samples: --memorized of them are the model's own greedy text from a
random first token with one token replaced in the middle (a memorized sample with one slip), the rest random
tokens (the held-out case, where nearly every position is a miss and the saving is small). Default model: a
random LLaMA-style config (4 layers, hidden 128, d_ff 347, vocab 1000); --model takes a local checkpoint
folder (AutoModelForCausalLM), e.g. the causal track's fine-tuned model. Prints whether both sides give the
same continuations and EL_n, each side's decode requests and wall time, and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from _sides import causal_model  # noqa: E402  (perf/ is sys.path[0] when run as a script)

from lib.families.causal import of  # noqa: E402
from lib.families.memorization import (_el_requests, greedy_continuations, ngram_overlap,  # noqa: E402
                                       own_continuations)


def build_model(path: str | None, seed: int) -> nn.Module:
    """The local checkpoint at `path`, or a seeded random LLaMA-style model."""
    return causal_model(path, seed, vocab_size=1000, hidden_size=128, intermediate_size=347, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)


def make_rows(model: nn.Module, args: argparse.Namespace) -> list[list[int]]:
    """Memorized-with-one-slip rows (the model's own greedy text) and random rows, seeded."""
    gen = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    n_own = round(args.samples * args.memorized)
    starts = [[int(torch.randint(3, vocab, (1,), generator=gen))] for _ in range(n_own)]
    own = [s + c for s, c in zip(starts, greedy_continuations(model, starts, [args.length - 1] * n_own, 0, args.batch))]
    for row in own:
        row[len(row) // 2] = 3 + (row[len(row) // 2] - 2) % (vocab - 3)  # one slip: a different token
    rand = [torch.randint(3, vocab, (args.length,), generator=gen).tolist() for _ in range(args.samples - n_own)]
    return own + rand


def el_of(rows: list[list[int]], requests: list[tuple[int, int, int]], preds: list[list[int]], n: int) -> list[float]:
    """EL_n per row from the continuations of its requests."""
    total, count = [0.0] * len(rows), [0] * len(rows)
    for (i, t, end), pred in zip(requests, preds):
        total[i] += ngram_overlap(pred, rows[i][t:end], n)
        count[i] += 1
    return [a / b for a, b in zip(total, count)]


def main() -> None:
    """Time both sides on the same model and rows; print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--memorized", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.seed)
    with torch.no_grad():
        rows = make_rows(model, args)
    seqs = of(rows)
    requests = _el_requests(seqs, args.n, None)
    start = time.perf_counter()
    with torch.no_grad():
        naive = greedy_continuations(model, [rows[i][:t] for i, t, _ in requests], [e - t for _, t, e in requests],
                                     0, args.batch)
    t_naive = time.perf_counter() - start
    start = time.perf_counter()
    shared = own_continuations(model, seqs, 0, requests, args.batch)
    t_shared = time.perf_counter() - start
    same = sum(a == b for a, b in zip(naive, shared))
    el_naive, el_shared = el_of(rows, requests, naive, args.n), el_of(rows, requests, shared, args.n)
    print(f"{len(rows)} samples x {args.length} tokens ({args.memorized:.0%} memorized with one slip), "
          f"EL_{args.n}: {len(requests)} continuations, threads {args.threads}")
    print(f"continuations equal: {same}/{len(requests)}; max |EL difference| "
          f"{max(abs(a - b) for a, b in zip(el_naive, el_shared)):.2e}")
    print(f"per prefix: {t_naive:8.2f} s")
    print(f"shared:     {t_shared:8.2f} s")
    print(f"ratio per prefix / shared: {t_naive / t_shared:.1f}x")


if __name__ == "__main__":
    main()
