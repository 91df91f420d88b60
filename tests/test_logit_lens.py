"""Logit lens (FFNAdapter.lens, lib.attacks.logit_lens): it reads the last layer exactly as the model does, on every
architecture that names its final norm or MLM head, and it finds a token an output-only edit hid."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

from lib.attacks.logit_lens import layer_ranks
from lib.core.adapter import ARCHITECTURES, FFNAdapter, TargetRows, lens_types
from lib.families.causal import CausalFamily, of
from tests.test_adapter import _EXTRA_CONFIGS, EXTRA_MASKED, _inputs
from tests.tiny_models import ALL_TINY, VOCAB


def build(model_type: str) -> torch.nn.Module:
    """A tiny LM (with its head) of `model_type`, random weights, eval mode."""
    if model_type in ALL_TINY:
        return ALL_TINY[model_type](seed=0)
    if model_type in EXTRA_MASKED:
        return EXTRA_MASKED[model_type](seed=0)
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, **_EXTRA_CONFIGS[model_type])
    torch.manual_seed(0)
    auto = AutoModelForCausalLM if ARCHITECTURES[model_type].family == "causal" else AutoModelForMaskedLM
    return auto.from_config(config).eval()


TESTED = sorted(set(ALL_TINY) | set(EXTRA_MASKED) | set(_EXTRA_CONFIGS))


@pytest.mark.parametrize("model_type", [t for t in TESTED if t in lens_types()])
def test_the_lens_of_the_last_layer_is_the_models_own_logits(model_type: str) -> None:
    model = build(model_type)
    adapter = FFNAdapter.for_model(model)
    kept = {}
    handle = adapter.block(adapter.n_layers - 1).register_forward_hook(
        lambda _m, _a, out: kept.update(h=out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        logits = model(**_inputs()).logits
        handle.remove()
        torch.testing.assert_close(adapter.lens(kept["h"]), logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", [t for t in TESTED if t not in lens_types()])
def test_an_architecture_the_lens_cannot_read_is_named(model_type: str) -> None:
    adapter = FFNAdapter.for_model(build(model_type))
    with pytest.raises(ValueError, match=f"model_type '{model_type}'.*allowed: .*llama"):
        adapter.lens(torch.zeros(1, adapter.d_model))


def rows_for(token: int, n: int = 12) -> TargetRows:
    """n rows of random text, each scored at its last position with gold token `token`."""
    inputs = _inputs(seed=3, batch=n, length=7)
    return TargetRows(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                      positions=torch.full((n,), 6), gold_ids=torch.full((n,), token), sample=torch.arange(n))


def push(model: torch.nn.Module, layer: int, token: int, scale: float) -> None:
    """Add scale x the token's (centred) unembedding row to `layer`'s FFN output bias: a GPT-2 FFN that writes it."""
    adapter = FFNAdapter.for_model(model)
    row = model.get_output_embeddings().weight[token]
    with torch.no_grad():
        adapter.down_proj_bias(layer).add_(scale * (row - row.mean()) / row.norm())


def test_the_lens_reads_a_token_an_edit_of_the_last_layer_hid() -> None:
    token = 57
    reference = ALL_TINY["gpt2"](seed=0)  # never wrote the token: the "retrained" model
    memorized = ALL_TINY["gpt2"](seed=0)
    push(memorized, 0, token, 200.0)  # layer 0 writes it: the model predicts it everywhere
    assert layer_ranks(memorized, rows_for(token)).final_top1 == 1.0
    unlearned = ALL_TINY["gpt2"](seed=0)
    push(unlearned, 0, token, 200.0)
    push(unlearned, 1, token, -200.0)  # "unlearning" that only cancels it in the last layer
    direct = layer_ranks(unlearned, rows_for(token), batch_size=5)
    assert direct.final_top1 <= 0.25  # the output no longer says it
    assert direct.best_top1 == 1.0 and bool((direct.ranks[:, 0] == 0).all())  # layer 0 still does
    base = layer_ranks(reference, rows_for(token))
    assert base.best_top1 <= 0.25 and base.median_best_rank > 3  # the reference shows nothing of it
    assert direct.ranks.shape == (12, 2) and direct.ranks.dtype == torch.long


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_one_forward_per_text_reads_every_prefix_row_as_its_own_forward(model_type: str) -> None:
    """prefixes=True (a causal family's rows: ids[:t] per target token) forwards each sample's longest row once and
    gets the ranks that a forward per row gets (texts of unequal length, one sample's rows across two batches)."""
    model = build(model_type)
    gen = torch.Generator().manual_seed(4)
    texts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (9, 13, 6)]
    seqs = of(texts, [(3, 8), (5, 12), (2, 5)])
    rows = CausalFamily(tokenizer=SimpleNamespace(pad_token_id=0)).target_rows(seqs, "span")
    alone = layer_ranks(model, rows, batch_size=4)
    shared = layer_ranks(model, rows, batch_size=2, prefixes=True)
    assert len(rows) == 15 and torch.equal(shared.ranks, alone.ranks)
    assert (shared.final_top1, shared.best_top1) == (alone.final_top1, alone.best_top1)
    other = TargetRows(rows.input_ids.flip(0), rows.attention_mask, rows.positions, rows.gold_ids, rows.sample)
    with pytest.raises(ValueError, match="not prefixes of one text; allowed: causal target rows"):
        layer_ranks(model, other, prefixes=True)
