"""Memorization of token sequences by a causal LM: n-gram overlap, batched greedy decoding, EL_n (Eq. 16), secret spans.

MA (Eq. 15) is lib.families.causal.accuracy; this module adds the generation-based scores. Greedy decoding
left-pads each batch and passes explicit position ids (cumsum of the mask minus one) so that padding shifts no
position, and reuses the KV cache between steps; it equals an unbatched per-prefix loop token for token.

Continuations of a sample's own prefixes (EL_n, the secret span) need far fewer decodes than one per prefix:
a greedy continuation from prefix t follows the true tokens up to the first position j >= t where the model's
teacher-forced argmax differs from the truth, and from there on it is the greedy continuation of the true
prefix [:j]. One teacher-forced forward finds every such j; one decode per j serves every prefix that reaches
it. A memorized sample has few such positions, so scoring it costs a forward instead of T decodes.
"""
from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass
from typing import Collection, Sequence

import torch
from torch import Tensor, nn

from lib.core.params import Count, Natural, check_ranges
from lib.families.causal import Sequences, accuracy, batches, logits_of, pad


@dataclass(frozen=True)
class ForgetSetConfig:
    """The causal track's `causal.memorized` section: which candidates form D_f (Eq. 17 thresholds)."""

    n_forget: Count = 16  # the paper's 32 (presets/full.yaml)
    margin: float = 0.10  # a candidate's MA must exceed the MA threshold by this much (< 0: admit some below it)
    el_n: Count = 10
    el_max_new: Count | None = None  # cap on each greedy continuation (None: the whole remaining suffix)
    n_valid: Count = 32  # held-out samples that set the thresholds
    batch_size: Count = 16
    decode_batch_size: Count = 64  # rows decoded together (each CPU step reads every weight: 1.65x at 64 vs 16)
    shard_size: Count = 8  # samples per cached scoring task (one Ray task each under compute.runner: ray)
    seed: Natural = 0

    def __post_init__(self) -> None:
        """Positive sizes."""
        check_ranges(self)


def choose_forget_set(ids: list[str], ma: list[float], el: list[float], limits: dict[str, float],
                      cfg: ForgetSetConfig) -> list[str]:
    """Seeded draw of n_forget candidates whose MA exceeds the threshold by `margin` and EL exceeds its threshold."""
    eligible = [i for i, m, e in zip(ids, ma, el) if m >= limits["ma"] + cfg.margin and e > limits["el"]]
    if len(eligible) < cfg.n_forget:
        raise ValueError(f"only {len(eligible)} of {len(ids)} candidates are memorized above the thresholds "
                         f"(MA > {limits['ma']:.3f} + margin {cfg.margin}, EL > {limits['el']:.3f}); "
                         f"causal.memorized.n_forget = {cfg.n_forget} needs more: fine-tune longer or add copies")
    return sorted(random.Random(cfg.seed).sample(eligible, cfg.n_forget), key=ids.index)


def mean_finite(values: list[float] | None) -> float | None:
    """Mean of the non-NaN values; None when there are none (JSON has no NaN)."""
    kept = [v for v in values or [] if v == v]
    return sum(kept) / len(kept) if kept else None


def _ngrams(tokens: Sequence[int], n: int) -> set[tuple[int, ...]]:
    """The set of n-grams of `tokens` (empty when it has fewer than n tokens)."""
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def ngram_overlap(pred: Sequence[int], label: Sequence[int], n: int) -> float:
    """Share of the label's distinct n-grams that the prediction reproduces (Jang et al.'s Overlap_n)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if len(label) < n:
        raise ValueError(f"label has {len(label)} tokens, fewer than n={n} (prediction has {len(pred)})")
    truth = _ngrams(list(label), n)
    return len(_ngrams(list(pred), n) & truth) / len(truth)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad rows: ids, attention mask and position ids (B, P) that start at 0 on each row's first real token."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # pads get position 0; they are masked anyway
    return ids.to(device), mask.to(device), positions.to(device)


def _forward_kwargs(model: nn.Module) -> dict[str, int]:
    """`logits_to_keep=1` where the model takes it: a prefill then projects only its last position on the vocabulary."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _greedy_batch(model: nn.Module, prefixes: Sequence[Sequence[int]], lengths: Sequence[int], pad_id: int,
                  stop: Collection[int] = ()) -> list[list[int]]:
    """Greedy tokens after each prefix (row i: at most lengths[i], ending at its first token of `stop`), all rows
    decoded together with the KV cache; a finished row leaves the batch, so no step is spent on it."""
    device = next(model.parameters()).device
    ids, mask, positions = _left_pad(prefixes, pad_id, device)
    tokens: list[list[int]] = [[] for _ in prefixes]
    live, past, extra = list(range(len(prefixes))), None, _forward_kwargs(model)
    while live:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                    use_cache=True, **extra)
        ids = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        keep = []
        for b, (row, token) in enumerate(zip(live, ids[:, 0].tolist())):
            tokens[row].append(token)
            if len(tokens[row]) < lengths[row] and token not in stop:
                keep.append(b)
        past, mask, positions = out.past_key_values, torch.cat([mask, torch.ones_like(ids)], 1), positions[:, -1:] + 1
        if len(keep) < len(live) and keep:  # drop finished rows from the batch and from the cache
            index = torch.tensor(keep, dtype=torch.long, device=device)
            past.batch_select_indices(index)
            ids, mask, positions = ids[index], mask[index], positions[index]
        live = [live[b] for b in keep]
    return tokens


def _check_requests(prefixes: Sequence[Sequence[int]], lengths: Sequence[int]) -> None:
    """Raise ValueError unless every prefix is non-empty and every length is >= 0, one per prefix."""
    if len(prefixes) != len(lengths):
        raise ValueError(f"{len(prefixes)} prefixes but {len(lengths)} lengths; one length per prefix is needed")
    for i, (prefix, length) in enumerate(zip(prefixes, lengths)):
        if len(prefix) == 0:
            raise ValueError(f"prefix {i} is empty; at least one token is needed to condition on")
        if length < 0:
            raise ValueError(f"length {length} of prefix {i} must be >= 0")


def greedy_continuations(model: nn.Module, prefixes: list[list[int]], lengths: list[int], pad_id: int,
                         batch_size: int = 32, stop: Collection[int] = ()) -> list[list[int]]:
    """Greedy continuation of `lengths[i]` new tokens after each prefix, batched (sorted by prefix length); with
    `stop`, a row ends at its first stop token (included), so rows may be shorter."""
    _check_requests(prefixes, lengths)
    # equal-length prefixes together: less padding and fewer wasted decoding steps
    order = sorted(range(len(prefixes)), key=lambda i: (len(prefixes[i]), lengths[i]))
    result: list[list[int]] = [[] for _ in prefixes]
    with torch.no_grad():
        for chunk in batches(len(order), batch_size):
            index = [order[c] for c in chunk if lengths[order[c]] > 0]
            if index:
                rows = _greedy_batch(model, [prefixes[i] for i in index], [lengths[i] for i in index], pad_id, stop)
                for row, i in zip(rows, index):
                    result[i] = row
    return result


def _teacher_argmax(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int) -> list[list[int]]:
    """Greedy next token after every prefix of each sequence, from one teacher-forced forward: entry j is the
    model's choice after ids[:j] (entry 0 unused, -1)."""
    out: list[list[int]] = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = pad([seqs.ids[i] for i in index], pad_id)
            best = logits_of(model, ids, mask).argmax(-1).cpu().tolist()  # (B, T-1): choice after ids[:j+1]
            out.extend([-1] + best[b][: len(seqs.ids[i]) - 1] for b, i in enumerate(index))
    return out


def _first_misses(row: Sequence[int], choice: Sequence[int]) -> list[int]:
    """For every t >= 1, the first position j >= t where the greedy choice misses the true token (len(row) if none)."""
    miss = [len(row)] * (len(row) + 1)
    for j in range(len(row) - 1, 0, -1):
        miss[j] = j if choice[j] != row[j] else miss[j + 1]
    return miss


def own_continuations(model: nn.Module, seqs: Sequences, pad_id: int, requests: Sequence[tuple[int, int, int]],
                      batch_size: int = 32, decode_batch_size: int | None = None) -> list[list[int]]:
    """Greedy continuation of end - t tokens after ids[i][:t] for each request (i, t, end), 1 <= t <= end <= len:
    the true tokens up to the first greedy miss, then one shared decode per miss position (module docstring).
    Forwards take `batch_size` samples, decodes `decode_batch_size` rows (default: batch_size)."""
    for i, t, end in requests:
        if not 1 <= t <= end <= len(seqs.ids[i]):
            raise ValueError(f"request ({i}, {t}, {end}) needs 1 <= t <= end <= {len(seqs.ids[i])} (sample {i}'s length)")
    choice = _teacher_argmax(model, seqs, pad_id, batch_size)
    misses = {i: _first_misses(seqs.ids[i], choice[i]) for i in {i for i, _, _ in requests}}
    need: dict[tuple[int, int], int] = {}
    for i, t, end in requests:
        j = misses[i][t]
        if j < end:
            need[(i, j)] = max(need.get((i, j), 0), end - j)
    keys = sorted(need)
    decoded = greedy_continuations(model, [list(seqs.ids[i][:j]) for i, j in keys], [need[k] for k in keys],
                                   pad_id, decode_batch_size or batch_size)
    tails = dict(zip(keys, decoded))
    out = []
    for i, t, end in requests:
        j, row = misses[i][t], seqs.ids[i]
        out.append(list(row[t:end]) if j >= end else list(row[t:j]) + tails[(i, j)][: end - j])
    return out


def _el_requests(seqs: Sequences, n: int, max_new: int | None) -> list[tuple[int, int, int]]:
    """For every sample and prefix length t = 1..T-n: (sample, t, end of the true suffix capped at max_new)."""
    requests = []
    for i, row in enumerate(seqs.ids):
        if len(row) <= n:
            raise ValueError(f"sequence {i} has {len(row)} tokens; EL_{n} needs at least {n + 1}")
        requests += [(i, t, len(row) if max_new is None else min(len(row), t + max_new))
                     for t in range(1, len(row) - n + 1)]
    return requests


def extraction_likelihood(model: nn.Module, seqs: Sequences, pad_id: int, n: int = 10, max_new: int | None = None,
                          batch_size: int = 32, decode_batch_size: int | None = None) -> Tensor:
    """EL_n per sequence (N,) float64 (Eq. 16): mean over t = 1..T-n of Overlap_n(greedy(w_<=t), true suffix)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if max_new is not None and max_new < n:
        raise ValueError(f"max_new={max_new} must be None or >= n={n} (a shorter suffix has no {n}-gram)")
    requests = _el_requests(seqs, n, max_new)
    preds = own_continuations(model, seqs, pad_id, requests, batch_size, decode_batch_size)
    total = torch.zeros(len(seqs), dtype=torch.float64)
    count = torch.zeros(len(seqs), dtype=torch.float64)
    for (i, t, end), pred in zip(requests, preds):
        total[i] += ngram_overlap(pred, seqs.ids[i][t:end], n)
        count[i] += 1
    return total / count


def _span_greedy(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int,
                 decode_batch_size: int | None = None) -> dict[int, list[int]]:
    """Greedy continuation of span-length tokens after the tokens before each span, by sample index."""
    index = [i for i, span in enumerate(seqs.spans) if span is not None]
    requests = [(i, seqs.spans[i][0], seqs.spans[i][1]) for i in index]
    return dict(zip(index, own_continuations(model, seqs, pad_id, requests, batch_size, decode_batch_size)))


def _span_scores(seqs: Sequences, preds: dict[int, list[int]], n: int) -> tuple[Tensor, Tensor]:
    """(span EL with n' = min(n, span length), exact match) per sample (N,), NaN where there is no span."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    el = torch.full((len(seqs),), math.nan, dtype=torch.float64)
    exact = torch.full((len(seqs),), math.nan, dtype=torch.float64)
    for i, pred in preds.items():
        start, end = seqs.spans[i]
        secret = list(seqs.ids[i][start:end])
        el[i] = ngram_overlap(pred, secret, min(n, len(secret)))
        exact[i] = float(pred == secret)
    return el, exact


def span_extraction(model: nn.Module, seqs: Sequences, pad_id: int, n: int = 10, batch_size: int = 32) -> Tensor:
    """Overlap of the greedy span continuation with the secret (N,), n' = min(n, span length); NaN without span."""
    return _span_scores(seqs, _span_greedy(model, seqs, pad_id, batch_size), n)[0]


def exact_extraction(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 32) -> Tensor:
    """1.0 where the greedy span continuation equals the secret exactly, else 0.0; NaN without span (N,)."""
    return _span_scores(seqs, _span_greedy(model, seqs, pad_id, batch_size), 1)[1]


@dataclass(frozen=True)
class MemorizationScores:
    """Per-sample memorization scores (plain floats, NaN where a sample has no secret span)."""

    ma: list[float]  # teacher-forced accuracy over the whole sequence (Eq. 15)
    el: list[float] | None  # EL_n (Eq. 16); None when not computed
    span_ma: list[float]  # teacher-forced accuracy over the secret span
    span_el: list[float]  # n-gram overlap of the greedy span continuation with the secret
    span_exact: list[float]  # 1.0 when the greedy span continuation is the secret


def score_memorization(model: nn.Module, seqs: Sequences, pad_id: int, n: int = 10, el: bool = True,
                       max_new: int | None = None, batch_size: int = 32,
                       decode_batch_size: int | None = None) -> MemorizationScores:
    """MA, EL_n (when `el`) and the secret-span scores of every sequence (one greedy pass for the spans)."""
    span_el, span_exact = _span_scores(seqs, _span_greedy(model, seqs, pad_id, batch_size, decode_batch_size), n)
    el_scores = (extraction_likelihood(model, seqs, pad_id, n, max_new, batch_size, decode_batch_size).tolist()
                 if el else None)
    return MemorizationScores(
        ma=accuracy(model, seqs, pad_id, batch_size).tolist(), el=el_scores,
        span_ma=accuracy(model, seqs, pad_id, batch_size, span=True).tolist(),
        span_el=span_el.tolist(), span_exact=span_exact.tolist())


def thresholds_from(valid_scores: MemorizationScores) -> tuple[float, float]:
    """Eq. 17 thresholds: (mean MA, mean EL_n) over held-out validation samples."""
    if valid_scores.el is None:
        raise ValueError("validation scores have no EL (el=None); score them with el=True")
    if not valid_scores.ma or not valid_scores.el:
        raise ValueError(f"no validation samples ({len(valid_scores.ma)} MA, {len(valid_scores.el)} EL values)")
    for name, values in (("ma", valid_scores.ma), ("el", valid_scores.el)):
        if any(math.isnan(v) for v in values):
            raise ValueError(f"validation {name} contains NaN; every validation sample needs a finite score")
    return sum(valid_scores.ma) / len(valid_scores.ma), sum(valid_scores.el) / len(valid_scores.el)
