"""Benchmark: grad_x_act vs a bare forward+backward of the same objective.

Usage: python perf/attribution.py [--model embedded|tiny] [--batches N] [--batch-size B]

The bare loop runs the same forward and the same scalar objective (gold-token logit at
the masked position, summed over rows) with parameters frozen and the input embeddings
requiring grad, so it pays for one backward too. Repeats are interleaved; medians are
reported together with the ratio attribution / bare (target <= 1.25).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from lib.core.adapter import FFNAdapter  # noqa: E402
from lib.core.attribution import frozen_parameters, grad_x_act  # noqa: E402
from lib.core.models import load_model  # noqa: E402


@dataclass(frozen=True)
class Batch:
    """One batch of masked sentences."""

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    positions: Tensor  # (B,)
    gold_ids: Tensor  # (B,)


def _sentence_ids(tokenizer, rng_seed: int, length: int) -> list[int]:
    """Token ids of seeded Faker text, cut to `length` including [CLS]/[SEP]."""
    from faker import Faker

    fake = Faker()
    fake.seed_instance(rng_seed)
    text = " ".join(fake.sentences(nb=12))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: length - 2]
    return [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]


def _mask_batch(rows: list[list[int]], mask_id: int, gen: torch.Generator) -> Batch:
    """Pad rows, mask one random content token per row and remember the gold token."""
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)], mask[b, : len(row)] = torch.tensor(row), 1
    lengths = mask.sum(1)
    positions = 1 + (torch.rand(len(rows), generator=gen) * (lengths - 2)).long()  # skip CLS/SEP
    rows_idx = torch.arange(len(rows))
    gold = ids[rows_idx, positions].clone()
    ids[rows_idx, positions] = mask_id
    return Batch(ids, mask, positions, gold)


def load_embedded(n_batches: int, batch_size: int, length: int = 48) -> tuple[nn.Module, list[Batch]]:
    """MiniLM-L6 as a masked LM (head randomly initialised, seeded) plus Faker batches."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the missing MLM head warning is expected
    model, tokenizer = load_model("embedded:minilm", "masked", seed=0)  # eval mode
    gen = torch.Generator().manual_seed(0)
    batches = [
        _mask_batch([_sentence_ids(tokenizer, i * batch_size + b, length) for b in range(batch_size)],
                    tokenizer.mask_token_id, gen)
        for i in range(n_batches)
    ]
    return model, batches


def load_tiny(n_batches: int, batch_size: int, length: int = 48) -> tuple[nn.Module, list[Batch]]:
    """Tiny random BERT plus random-id batches (smoke mode, no tokenizer needed)."""
    from tests.tiny_models import tiny_bert_mlm

    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n_batches):
        rows = torch.randint(5, 101, (batch_size, length), generator=gen).tolist()
        batches.append(_mask_batch(rows, 4, gen))
    return tiny_bert_mlm(seed=0), batches


def attribute_batch(model: nn.Module, adapter: FFNAdapter, b: Batch) -> None:
    """grad_x_act on one batch (one forward, one backward)."""
    grad_x_act(model, adapter, b.input_ids, b.attention_mask, b.positions, b.gold_ids)


def bare_batch(model: nn.Module, b: Batch) -> None:
    """Same forward + backward of the same objective, gradients w.r.t. input embeddings."""
    with frozen_parameters(model):
        inputs = model.get_input_embeddings()(b.input_ids).detach().requires_grad_(True)  # (B, T, d)
        logits = model(inputs_embeds=inputs, attention_mask=b.attention_mask).logits  # (B, T, V)
        rows = torch.arange(len(b.positions))
        logits[rows, b.positions, b.gold_ids].sum().backward()


def _timed(fn: Callable[[], None]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_repeat(model: nn.Module, adapter: FFNAdapter, batches: list[Batch]) -> tuple[float, float]:
    """Total seconds (attribution, bare) over all batches, alternating per batch.

    Alternating batch by batch keeps load from other processes on this shared machine
    from landing on one side only.
    """
    attr = bare = 0.0
    for b in batches:
        attr += _timed(lambda: attribute_batch(model, adapter, b))
        bare += _timed(lambda: bare_batch(model, b))
    return attr, bare


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, time both loops (interleaved, median of repeats) and print results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["embedded", "tiny"], default="embedded")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)  # 2 shared cores: avoid oversubscription
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loader = load_embedded if args.model == "embedded" else load_tiny
    model, batches = loader(args.batches, args.batch_size)
    adapter = FFNAdapter.for_model(model)
    attribute_batch(model, adapter, batches[0])  # warm-up: first-call allocations
    bare_batch(model, batches[0])
    times: dict[str, list[float]] = {"attribution": [], "bare": []}
    for _ in range(args.repeats):
        attr, bare = time_repeat(model, adapter, batches)
        times["attribution"].append(attr)
        times["bare"].append(bare)
    med = {k: statistics.median(v) for k, v in times.items()}
    shape = tuple(batches[0].input_ids.shape)
    print(f"model={args.model} batches={len(batches)} batch_shape={shape} "
          f"threads={args.threads} repeats={args.repeats}")
    runs = {k: [round(t, 3) for t in v] for k, v in times.items()}
    print(f"attribution (grad_x_act): {med['attribution']:.3f} s  runs={runs['attribution']}")
    print(f"bare forward+backward:    {med['bare']:.3f} s  runs={runs['bare']}")
    print(f"ratio attribution/bare:   {med['attribution'] / med['bare']:.3f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
