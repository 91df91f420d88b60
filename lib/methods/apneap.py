"""APNEAP baseline (SNKU paper, Appendix D): steer DEPN-selected FFN neurons away from the secret.

Steps, for privacy neurons selected upstream by attribution (passed in as `neurons`):
1. Desensitize each secret: same text, the secret replaced by a neutral placeholder with the same number of
   tokens (digits -> other digits, name words -> neutral names, other words -> neutral words), so original and
   counterpart align position by position. Masked LMs: the record's secret string is swapped and re-encoded
   (`masked_pairs`); causal LMs: each token of the sample's private span is swapped for a one-token neutral
   stand-in of its kind (`causal_pairs`; a sample without a span is private as a whole, as for every causal
   method's targets).
2. Run both plain (unmasked) texts and read the FFN activations (down-projection input) at the secret's token
   positions. Steering vector, per layer:
       V = mean over secrets of mean over positions of (H_original - H_desensitized),
   restricted to the selected neurons (zero elsewhere): the paper's D.2 definition, the
   direction TOWARD the private pattern.
3. Patch H_hat = H - alpha * V, which moves activations AWAY from the private pattern. The paper
   writes H_hat = H + alpha * V; that only moves away when V points from private to
   desensitized (V_des = -V): with V as in D.2 a plus sign would push toward the secret (the
   defect of the public code). Our form equals the paper's with V_des.
A position-independent additive patch p (d_ff,) on the down-projection input equals a bias change
b_new = b + W p of the down-projection, so the edit is stored as biases: the model stays an
ordinary checkpoint and evaluation needs no hooks. A model whose down-projection has no bias takes one where
its architecture's config allows (LLaMA's mlp_bias: lib.core.adapter.FFNAdapter.add_ffn_biases), else the
method refuses it by name.

Neurons: DEPN's selection (lib.methods.depn.select_depn at the same K) over the pipeline's IG
in `inputs.stats`; secrets from `inputs.records` (masked) or the spans of `inputs.forget` (causal), the
tokenizer from the family. `steer` takes hand-picked neurons instead (tests use it).
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from lib.core.adapter import FFNAdapter
from lib.data.records import CATEGORIES, SecretRecord
from lib.families.causal import Sequences, target_tokens
from lib.families.masked import encode_record, scoring_mode, special_ids
from lib.core.params import Natural, Positive
from lib.methods import Inputs, Report, depn

label = "APNEAP"  # the name every report prints
families = ("masked", "causal")  # counterparts: the secret's tokens swapped for neutral ones, position by position
needs = ("ig", "forget", "records")
kind = "neurons"

DIGITS = tuple("0123456789")
NEUTRAL_NAMES = ("john", "mary", "james", "anna", "david", "paul", "peter", "susan", "mark", "linda")
NEUTRAL_WORDS = ("the", "thing", "item", "place", "time", "work", "day", "note", "part", "way")
_CHUNK = 32  # texts per forward pass when recording activations


@dataclass(frozen=True)
class Config(depn.Config):
    """DEPN's selection of the K neurons (its Config), patch strength alpha (paper: 10), placeholder draw seed."""

    alpha: Positive = 10.0
    placeholder_seed: Natural = 0


# ---------------------------------------------------------------- desensitized counterparts


def n_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Number of tokens of `text` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_token_pool(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> tuple[str, ...]:
    """The words of `words` that the tokenizer keeps as one token."""
    pool = tuple(w for w in words if n_tokens(tokenizer, w) == 1)
    if not pool:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} keeps none of {list(words)} as one token")
    return pool


def _is_numeric(word: str) -> bool:
    """True for words made of digits and punctuation only, with at least one digit."""
    return any(c.isdigit() for c in word) and not any(c.isalpha() for c in word)


def _other_digits(word: str, rng: random.Random) -> str:
    """`word` with every digit replaced by a random different digit."""
    return "".join(rng.choice([d for d in DIGITS if d != c]) if c.isdigit() else c for c in word)


def neutral_word(tokenizer: PreTrainedTokenizerBase, word: str, pool: Sequence[str],
                 rng: random.Random) -> str:
    """A neutral stand-in for one word with the same token count (punctuation is kept)."""
    if not any(c.isalnum() for c in word):
        return word  # punctuation carries no private content
    n = n_tokens(tokenizer, word)
    if _is_numeric(word):
        candidate = _other_digits(word, rng)
        if n_tokens(tokenizer, candidate) == n:
            return candidate
        pool = single_token_pool(tokenizer, DIGITS)
    choices = [w for w in pool if w != word.lower()] or list(pool)
    return " ".join(rng.choice(choices) for _ in range(n))  # n one-token words keep the count


def desensitize(tokenizer: PreTrainedTokenizerBase, record: SecretRecord,
                rng: random.Random) -> SecretRecord:
    """The record with its secret replaced by a same-token-count neutral placeholder."""
    if record.category not in CATEGORIES:
        raise ValueError(f"record {record.id}: category {record.category!r} not in {CATEGORIES}")
    pool = single_token_pool(tokenizer, NEUTRAL_NAMES if record.category == "NAME" else NEUTRAL_WORDS)
    parts = re.split(r"(\s+)", record.secret)  # keep the original spacing
    secret = "".join(p if not p or p.isspace() else neutral_word(tokenizer, p, pool, rng) for p in parts)
    if n_tokens(tokenizer, secret) != n_tokens(tokenizer, record.secret):
        # the secret itself is never printed: only its record id
        raise ValueError(f"record {record.id}: no same-length placeholder found for its secret "
                         f"with tokenizer {type(tokenizer).__name__}")
    return dataclasses.replace(record, secret=secret)


# ---------------------------------------------------------------- causal LMs: span tokens swapped one for one


def _one_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int | None:
    """The id of `text` when the tokenizer keeps it as one token, else None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


@functools.lru_cache(maxsize=64)  # asked for every span token of every K the stop rule tries: the same few pools
def token_pool(tokenizer: PreTrainedTokenizerBase, words: tuple[str, ...], space: str) -> tuple[int, ...]:
    """Ids of the words that stay one token after `space` (the token's own leading space), else without it."""
    for lead in dict.fromkeys((space, "")):
        pool = tuple(dict.fromkeys(i for i in (_one_token(tokenizer, lead + w) for w in words) if i is not None))
        if pool:
            return pool
    raise ValueError(f"tokenizer {type(tokenizer).__name__} keeps none of {list(words)} as one token")


def neutral_token(tokenizer: PreTrainedTokenizerBase, token: int, rng: random.Random) -> int:
    """A neutral one-token stand-in for span token `token`: other digits for digits, a neutral name for a
    capitalised word, a neutral word otherwise; punctuation, spaces and special tokens are kept."""
    text = tokenizer.decode([token])
    core = text.strip()
    if token in tokenizer.all_special_ids or not any(c.isalnum() for c in core):
        return token  # punctuation and special tokens carry no private content
    space = text[: len(text) - len(text.lstrip())]
    if _is_numeric(core):
        other = _one_token(tokenizer, space + _other_digits(core, rng))
        if other is not None and other != token:
            return other
        words: tuple[str, ...] = DIGITS
    elif core[0].isupper():
        words = tuple(w.capitalize() for w in NEUTRAL_NAMES)
    else:
        words = NEUTRAL_WORDS
    pool = [i for i in token_pool(tokenizer, words, space) if i != token]
    return rng.choice(pool) if pool else token  # the token is the pool's only word: neutral already


# ---------------------------------------------------------------- aligned pairs and steering vectors


@dataclass(frozen=True)
class Aligned:
    """Original and desensitized token rows and each row's secret span [start, end), the same in both."""

    original: tuple[tuple[int, ...], ...]
    neutral: tuple[tuple[int, ...], ...]
    spans: tuple[tuple[int, int], ...]
    pad_id: int


def masked_pairs(tokenizer: PreTrainedTokenizerBase, records: Sequence[SecretRecord], placeholder_seed: int,
                 max_len: int = 128) -> Aligned:
    """Masked LMs: each record and its desensitized counterpart, encoded (special tokens included)."""
    if not records:
        raise ValueError("records is empty; APNEAP needs at least one secret record")
    originals = [encode_record(tokenizer, r, max_len) for r in records]
    swapped = counterparts(tokenizer, records, placeholder_seed, max_len)
    neutral = [encode_record(tokenizer, r, max_len) for r in swapped]
    return Aligned(tuple(tuple(e.input_ids) for e in originals), tuple(tuple(e.input_ids) for e in neutral),
                   tuple((e.secret_start, e.secret_start + e.secret_len) for e in originals),
                   special_ids(tokenizer)[3])


def causal_pairs(tokenizer: PreTrainedTokenizerBase, forget: Sequences, placeholder_seed: int) -> Aligned:
    """Causal LMs: each forget sample and its copy with every span token swapped one for one (one seeded draw in
    sample order); the span is the sample's private span, or every token after the first without one."""
    if not len(forget):
        raise ValueError("forget is empty; APNEAP needs at least one forget sample")
    rng, neutral, spans = random.Random(placeholder_seed), [], []
    for i, ids in enumerate(forget.ids):
        positions = target_tokens(forget, i, "span")
        row = list(ids)
        for t in positions:
            row[t] = neutral_token(tokenizer, ids[t], rng)
        neutral.append(tuple(row))
        spans.append((positions[0], positions[-1] + 1))
    return Aligned(tuple(forget.ids), tuple(neutral), tuple(spans), int(tokenizer.pad_token_id))


def pairs_of(inputs: Inputs, placeholder_seed: int) -> Aligned:
    """The aligned pairs of the inputs' family: records (masked) or the forget samples' spans (causal)."""
    family = inputs.family
    if family.name == "causal":
        return causal_pairs(family.tokenizer, inputs.forget, placeholder_seed)
    return masked_pairs(family.tokenizer, inputs.records, placeholder_seed, family.max_len)


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids (B, T) and attention mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return ids, mask


def span_activations(model: nn.Module, adapter: FFNAdapter, rows: Sequence[Sequence[int]],
                     spans: Sequence[tuple[int, int]], pad_id: int) -> Tensor:
    """Per row, FFN activations averaged over its span's positions: (N, L, d_ff) float32."""
    device, means = next(model.parameters()).device, []
    encoder = getattr(model, "base_model", model)  # the vocabulary head is not needed
    with scoring_mode(model):
        for start in range(0, len(rows), _CHUNK):
            chunk = range(start, min(start + _CHUNK, len(rows)))
            ids, mask = _pad([rows[i] for i in chunk], pad_id)  # (B, T), (B, T)
            with adapter.capture() as acts:
                encoder(input_ids=ids.to(device), attention_mask=mask.to(device))
            stacked = torch.stack([acts[layer] for layer in range(adapter.n_layers)], dim=1)  # (B, L, T, d_ff)
            means += [stacked[b, :, spans[i][0]:spans[i][1]].float().mean(dim=1).cpu() for b, i in enumerate(chunk)]
    return torch.stack(means)  # (N, L, d_ff)


def check_neurons(adapter: FFNAdapter, neurons: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Validate (layer, neuron) pairs: non-empty, in range, no duplicates."""
    pairs = tuple((int(layer), int(neuron)) for layer, neuron in neurons)
    if not pairs:
        raise ValueError("neurons is empty; APNEAP needs at least one selected (layer, neuron)")
    bad = [p for p in pairs if not (0 <= p[0] < adapter.n_layers and 0 <= p[1] < adapter.d_ff)]
    if bad:
        raise ValueError(f"neurons {bad[:5]} out of range; allowed layer 0..{adapter.n_layers - 1}, "
                         f"neuron 0..{adapter.d_ff - 1}")
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"neurons has {len(pairs) - len(set(pairs))} duplicate pairs; each once")
    return pairs


def neuron_mask(adapter: FFNAdapter, neurons: Sequence[tuple[int, int]]) -> Tensor:
    """Boolean (L, d_ff) mask, True at the selected neurons."""
    mask = torch.zeros(adapter.n_layers, adapter.d_ff, dtype=torch.bool)
    for layer, neuron in check_neurons(adapter, neurons):
        mask[layer, neuron] = True
    return mask


def _span(tokenizer: PreTrainedTokenizerBase, record: SecretRecord, max_len: int) -> tuple[int, int]:
    """(start, length) of the record's secret tokens in its encoding."""
    encoded = encode_record(tokenizer, record, max_len)
    return encoded.secret_start, encoded.secret_len


def counterparts(tokenizer: PreTrainedTokenizerBase, records: Sequence[SecretRecord],
                 placeholder_seed: int, max_len: int = 128) -> list[SecretRecord]:
    """Desensitized records, one seeded draw in record order, each aligned with its original."""
    rng = random.Random(placeholder_seed)
    neutral = [desensitize(tokenizer, r, rng) for r in records]
    for record, other in zip(records, neutral):
        if _span(tokenizer, record, max_len) != _span(tokenizer, other, max_len):
            # activations are compared position by position, so the spans must coincide
            raise ValueError(f"record {record.id}: its counterpart's secret span (start, length) "
                             f"{_span(tokenizer, other, max_len)} differs from the original's")
    return neutral


def steering_vectors(model: nn.Module, adapter: FFNAdapter, pairs: Aligned,
                     neurons: Sequence[tuple[int, int]]) -> Tensor:
    """V (L, d_ff): mean of H_original - H_desensitized at the secrets, zero off `neurons`."""
    mask = neuron_mask(adapter, neurons)  # (L, d_ff)
    original = span_activations(model, adapter, pairs.original, pairs.spans, pairs.pad_id)  # (N, L, d_ff)
    neutral = span_activations(model, adapter, pairs.neutral, pairs.spans, pairs.pad_id)  # (N, L, d_ff)
    return (original - neutral).mean(dim=0) * mask  # (L, d_ff)


# ---------------------------------------------------------------- the edit


def activation_patch(vectors: Tensor, alpha: float) -> Tensor:
    """The additive patch p = -alpha * V (L, d_ff): away from the private direction."""
    return -alpha * vectors


def bias_shift(adapter: FFNAdapter, layer: int, patch: Tensor) -> Tensor:
    """W p (d_model,) in float32: the down-projection output change from adding p (d_ff,) to its input."""
    idx = patch.nonzero().flatten()  # (k,) only touched neurons contribute
    cols = adapter.get_columns(layer, idx).float()  # (k, d_model)
    return patch[idx].float().to(cols.device) @ cols  # (d_model,)


def check_biases(adapter: FFNAdapter, layers: Sequence[int]) -> None:
    """Reject layers whose down-projection has no bias to hold the patch."""
    missing = sorted({layer for layer in layers if adapter.down_proj_bias(layer) is None})
    if missing:
        raise ValueError(f"down-projection of layers {missing} has no bias; APNEAP stores its "
                         "patch as a bias, allowed: models whose FFN down-projection has one")


def apply_patch_as_bias(adapter: FFNAdapter, patch: Tensor) -> tuple[int, ...]:
    """In place: b_l += W_l p_l for each layer with a non-zero patch row; returns those layers."""
    if tuple(patch.shape) != (adapter.n_layers, adapter.d_ff):
        raise ValueError(f"patch shape {tuple(patch.shape)} invalid; expected {(adapter.n_layers, adapter.d_ff)}")
    layers = tuple(int(layer) for layer in patch.any(dim=1).nonzero().flatten())
    check_biases(adapter, layers)  # before any write, so a failure leaves the model untouched
    with torch.no_grad():
        for layer in layers:
            bias = adapter.down_proj_bias(layer)
            shifted = bias.float() + bias_shift(adapter, layer, patch[layer]).to(bias.device)  # (d_model,)
            bias.copy_(shifted.to(bias.dtype))  # rounded once for bf16/fp16 models
    return layers


def steer(model: nn.Module, inputs: Inputs, cfg: Config, pairs: Sequence[tuple[int, int]]) -> Report:
    """Steer the given (layer, neuron) pairs away from the secrets of `inputs.records`, as bias edits in place."""
    adapter = FFNAdapter.for_model(model)
    start = time.perf_counter()
    pairs = check_neurons(adapter, pairs)
    aligned = pairs_of(inputs, cfg.placeholder_seed)  # bad inputs fail before the model changes
    adapter.add_ffn_biases()  # zero biases where the config allows (LLaMA), to hold the patch; else refused here
    vectors = steering_vectors(model, adapter, aligned, pairs)
    layers = apply_patch_as_bias(adapter, activation_patch(vectors, cfg.alpha))
    return Report(strength=float(len(pairs)), strength_name="neurons", steps=1,
                  trainable=len(layers) * adapter.d_model, neurons=pairs, edit_seconds=time.perf_counter() - start)


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """DEPN's top-K privacy neurons (from the precomputed IG), steered away from the secrets in place."""
    start = time.perf_counter()
    pairs = depn.select_depn(*depn.check_ig(inputs.stats, FFNAdapter.for_model(model), "apneap"), cfg)
    selected = time.perf_counter()
    report = steer(model, inputs, cfg, pairs)
    return dataclasses.replace(report, selection_seconds=selected - start)
