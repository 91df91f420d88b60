"""Benchmark: the costliest attacks on a causal LM, as they were before 2026-12-06 and as they are.

Usage: python perf/attacks.py [--model DIR] [--prefixes 16] [--samples 8] [--max-new 8] [--steps 10]
                              [--batch 4] [--threads 2] [--repeats 2] [--seed 0]

Workloads (the CPU default's causal audit: 16 secrets, 8 samples of 8 tokens each, relearning 10 steps of 4 texts
of 64 tokens), sides alternated:
  sampling  per prefix: each prefix's samples in a batch of their own, a forward after the last token too
            (before 2026-12-06); every row: every prefix's rows in left-padded batches of 64, no unread forward,
            each row's prompt read (2026-12-06); after: lib.attacks.sampling.hits, as "every row" but each prompt
            read once and its KV cache copied to its samples
  relearn   before: AdamW's per-tensor loop; after: lib.attacks.relearn.adamw (fused on CPU and CUDA)
  lens      before: the logit lens forwards a row per secret token (its text up to the token); after: each text
            once (lib.attacks.logit_lens.layer_ranks with prefixes=True), spans of 5 tokens
Default model: a random LLaMA-style model of SmolLM2-135M's shape (30 layers, hidden 576, d_ff 1536, vocab
49152; the optimizer's cost grows with the weights, the timing does not depend on their values); --model takes a
local checkpoint folder, e.g. data/causal/finetuned. Prints each side's median and the ratio.
"""
from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from _sides import causal_model, time_sides  # noqa: E402  (perf/ is sys.path[0] when run as a script)

from lib.attacks.logit_lens import layer_ranks  # noqa: E402
from lib.attacks.relearn import adamw  # noqa: E402
from lib.attacks.sampling import SamplingConfig, _next_token, continue_rows, hits  # noqa: E402
from lib.families.causal import CausalFamily, of  # noqa: E402


def build_model(path: str | None, seed: int) -> nn.Module:
    """The local checkpoint at `path`, or a seeded random model of SmolLM2-135M's shape."""
    return causal_model(path, seed, vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                        tie_word_embeddings=True)


def sample_before(model: nn.Module, prefixes: list[list[int]], cfg: SamplingConfig) -> None:
    """The earlier sampler: one batch of n_samples rows per prefix, a forward after the last token too."""
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for prefix in prefixes:
            result = model(input_ids=torch.tensor([prefix] * cfg.n_samples), use_cache=True)
            for _ in range(cfg.max_new):
                token = _next_token(result.logits[:, -1], cfg, generator)
                result = model(input_ids=token.unsqueeze(-1), past_key_values=result.past_key_values, use_cache=True)


def sample_every_row(model: nn.Module, prefixes: list[list[int]], cfg: SamplingConfig) -> None:
    """The 2026-12-06 sampler: n_samples copies of each prefix as rows of their own, each prompt read again."""
    generator = torch.Generator().manual_seed(cfg.seed)
    rows = [prefix for prefix in prefixes for _ in range(cfg.n_samples)]
    for start in range(0, len(rows), cfg.batch_size):
        part = rows[start:start + cfg.batch_size]
        continue_rows(model, part, [1] * len(part), cfg, generator)


def relearn_steps(model: nn.Module, make: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                  batch: torch.Tensor, steps: int) -> None:
    """`steps` full-weight training steps on one batch with the optimizer `make` builds."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    optimizer = make(params)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
    model.eval()


def main() -> None:
    """Time both sides of each workload alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model"), ap.add_argument("--prefixes", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8), ap.add_argument("--max-new", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10), ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2), ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.seed)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    prefixes = [torch.randint(3, vocab, (int(n),), generator=gen).tolist()
                for n in torch.randint(20, 61, (args.prefixes,), generator=gen)]
    secrets = [[0] * 4 for _ in prefixes]
    texts = [prefix + [5] * 5 for prefix in prefixes]  # a 5-token secret after each prefix
    rows = CausalFamily(tokenizer=SimpleNamespace(pad_token_id=0)).target_rows(
        of(texts, [(len(p), len(p) + 5) for p in prefixes]), "span")
    batch = torch.randint(3, vocab, (args.batch, 64), generator=gen)
    cfg = SamplingConfig(n_samples=args.samples, max_new=args.max_new, seed=args.seed)
    plain = lambda ps: torch.optim.AdamW(ps, lr=1e-5, weight_decay=0.0)  # noqa: E731
    fast = lambda ps: adamw(ps, 1e-5)  # noqa: E731
    sides: dict[str, dict[str, Callable[[], object]]] = {
        "sampling": {"per prefix": lambda: sample_before(model, prefixes, cfg),
                     "every row": lambda: sample_every_row(model, prefixes, cfg),
                     "after": lambda: hits(model, prefixes, secrets, cfg)},
        "relearn": {"before": lambda: relearn_steps(model, plain, batch, args.steps),
                    "after": lambda: relearn_steps(model, fast, batch, args.steps)},
        "lens": {"before": lambda: layer_ranks(model, rows, 16), "after": lambda: layer_ranks(model, rows, 16, True)}}
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.0f}M weights, threads {args.threads}, {args.repeats} repeats; sampling {args.prefixes} "
          f"prefixes x {args.samples} samples x {args.max_new} tokens; relearning {args.steps} steps of "
          f"{args.batch} x 64 tokens")
    for name, pair in sides.items():
        med, _ = time_sides(pair, args.repeats)
        print(f"{name:9s} " + ", ".join(f"{side} {sec:6.2f} s" for side, sec in med.items()) + "; ratio to after: "
              + ", ".join(f"{side} {sec / med['after']:.2f}x" for side, sec in med.items() if side != "after"))


if __name__ == "__main__":
    main()
