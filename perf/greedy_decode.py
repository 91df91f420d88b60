"""Benchmark: batched greedy decoding with finished rows leaving the batch vs kept to the batch's longest row.

Usage: python perf/greedy_decode.py [--model DIR] [--samples 8] [--length 128] [--batch 64] [--threads 2]
                                     [--repeats 2] [--seed 0]

Workload: what EL_n costs on a model that no longer knows its forget set (lib.families.memorization): a decode
from every prefix length j = 1..T-1 of each sample (T from --length/2 to --length) to the sample's end, so
rows of one batch, sorted by prefix length, need different numbers of new tokens. Sides, alternated, the same requests in the same order and batches:
  kept      every row of a batch is decoded until the batch's longest request is done (the decoder before
            2026-12-05: one prefill projected on the vocabulary at every position)
  leaving   lib greedy_continuations: a row leaves the batch and the KV cache once it has its tokens, and the
            prefill projects only its last position (`logits_to_keep=1`)
Default model: a random LLaMA-style config (4 layers, hidden 256, d_ff 683, vocab 8000); --model takes a local
checkpoint folder (AutoModelForCausalLM), e.g. data/causal/finetuned. Prints whether both sides give the same
tokens, row-steps decoded, each side's median wall time and the ratio.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from _sides import causal_model, time_sides  # noqa: E402  (perf/ is sys.path[0] when run as a script)

from lib.families.causal import batches  # noqa: E402
from lib.families.memorization import _left_pad, greedy_continuations  # noqa: E402


def build_model(path: str | None, seed: int) -> nn.Module:
    """The local checkpoint at `path`, or a seeded random LLaMA-style model."""
    return causal_model(path, seed, vocab_size=8000, hidden_size=256, intermediate_size=683, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)


def kept_batch(model: nn.Module, prefixes: Sequence[Sequence[int]], steps: int) -> list[list[int]]:
    """The earlier decoder: all rows for `steps` tokens, full-vocabulary logits at every prefill position."""
    ids, mask, positions = _left_pad(prefixes, 0, next(model.parameters()).device)
    past, out = None, []
    for _ in range(steps):
        res = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
        ids = res.logits[:, -1].argmax(-1, keepdim=True)
        out.append(ids)
        past, mask, positions = res.past_key_values, torch.cat([mask, torch.ones_like(ids)], 1), positions[:, -1:] + 1
    return torch.cat(out, 1).tolist()


def kept(model: nn.Module, prefixes: list[list[int]], lengths: list[int], batch: int) -> list[list[int]]:
    """greedy_continuations' order and batches, decoded the earlier way."""
    order = sorted(range(len(prefixes)), key=lambda i: (len(prefixes[i]), lengths[i]))
    result: list[list[int]] = [[] for _ in prefixes]
    with torch.no_grad():
        for chunk in batches(len(order), batch):
            index = [order[c] for c in chunk]
            rows = kept_batch(model, [prefixes[i] for i in index], max(lengths[i] for i in index))
            for row, i in zip(rows, index):
                result[i] = row[: lengths[i]]
    return result


def workload(vocab: int, args: argparse.Namespace) -> tuple[list[list[int]], list[int]]:
    """Every prefix of `samples` random rows of length --length/2 .. --length (seeded), each continued to its
    row's end (the causal track's forget samples are 76-128 tokens)."""
    gen = torch.Generator().manual_seed(args.seed)
    sizes = torch.randint(args.length // 2, args.length + 1, (args.samples,), generator=gen).tolist()
    rows = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in sizes]
    pairs = [(row[:j], len(row) - j) for row in rows for j in range(1, len(row))]
    return [p for p, _ in pairs], [n for _, n in pairs]


def main() -> None:
    """Time both sides alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model"), ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--length", type=int, default=128), ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2), ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.seed)
    prefixes, lengths = workload(model.config.vocab_size, args)
    med, outs = time_sides({"kept": lambda: kept(model, prefixes, lengths, args.batch),
                            "leaving": lambda: greedy_continuations(model, prefixes, lengths, 0, args.batch)},
                           args.repeats)
    order = sorted(range(len(prefixes)), key=lambda i: (len(prefixes[i]), lengths[i]))
    padded = sum(len(c) * max(lengths[order[i]] for i in c) for c in batches(len(order), args.batch))
    equal = sum(a == b for a, b in zip(outs["kept"], outs["leaving"]))
    print(f"{args.samples} samples x {args.length} tokens, {len(prefixes)} decodes in batches of {args.batch}, "
          f"threads {args.threads}, {args.repeats} repeats")
    print(f"same tokens: {equal}/{len(prefixes)}; row-steps decoded: kept {padded}, leaving {sum(lengths)}")
    print(f"kept:    {med['kept']:6.2f} s\nleaving: {med['leaving']:6.2f} s\n"
          f"ratio kept / leaving: {med['kept'] / med['leaving']:.2f}x")


if __name__ == "__main__":
    main()
