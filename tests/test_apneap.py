"""Tests for the APNEAP baseline: desensitized counterparts (records on masked LMs, span tokens on causal ones),
steering vectors, bias-form patch (biases a LLaMA takes through its config)."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import Tensor
from transformers import AutoTokenizer, BertForMaskedLM, PreTrainedTokenizerBase

from lib.core.adapter import FFNAdapter
from lib.core.attribution import grad_x_act
from lib.core.editing import NeuronPatch, apply_edit
from lib.core.finetune import MlmConfig, train
from lib.data.records import SecretRecord
from lib.families.causal import CausalFamily, of
from lib.families.masked import MaskedFamily, MaskedRows, masked_logits, mlm_batch_loss, secret_token_rows
from lib.methods import Inputs, Stats, apneap, unlearn
from tests.tiny_models import (D_FF, N_LAYERS, VOCAB, save_tiny_bert_checkpoint, tiny_gpt2, tiny_llama,
                                tiny_word_tokenizer)

SECRET = SecretRecord("TEL-0001", "TEL", "my phone number is ", "4 1 7 2 9 3 8 0 6 5", " .", 4, False)
OTHER_TEXTS = ["the meeting is on monday at the office .", "please send the report to the team .",
               "we will call you tomorrow about the deal ."]
TOP_K = 20
Memorized = tuple[BertForMaskedLM, PreTrainedTokenizerBase]


@pytest.fixture(scope="module")
def memorized(tmp_path_factory: pytest.TempPathFactory) -> Memorized:
    """A tiny BERT trained until it fills in SECRET's digits (gold probability > 0.5)."""
    folder = save_tiny_bert_checkpoint(tmp_path_factory.mktemp("apneap-bert"), seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForMaskedLM.from_pretrained(folder)
    cfg = MlmConfig(epochs=300, batch_size=8, learning_rate=5e-3, weight_decay=0.0,
                    warmup_fraction=0.0, mask_prob=0.3, max_len=32, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on shared cores: one thread is several times faster
    try:
        n, loss = mlm_batch_loss(model, tokenizer, [SECRET.text] * 4 + OTHER_TEXTS, cfg)
        train(model, n, loss, cfg)
    finally:
        torch.set_num_threads(threads)
    assert float(_gold_probs(model, _rows(tokenizer)).mean()) > 0.5  # the precondition of test (a)
    return model.eval(), tokenizer


def _rows(tokenizer: PreTrainedTokenizerBase) -> MaskedRows:
    """SECRET's scoring rows: each digit masked alone."""
    return secret_token_rows(tokenizer, [SECRET], max_len=32)


def _gold_probs(model: torch.nn.Module, rows: MaskedRows) -> Tensor:
    """Probability of the gold token at each row's [MASK]: (R,)."""
    return torch.softmax(masked_logits(model, rows), dim=-1)[torch.arange(len(rows)), rows.gold_ids]


def _top_neurons(model: torch.nn.Module, rows: MaskedRows, k: int) -> tuple[tuple[int, int], ...]:
    """DEPN-style selection stand-in: the k neurons with the largest grad x act on the rows."""
    adapter = FFNAdapter.for_model(model)
    attribution = grad_x_act(model, adapter, rows.input_ids, rows.attention_mask, rows.positions, rows.gold_ids)
    return tuple((int(i) // adapter.d_ff, int(i) % adapter.d_ff) for i in attribution.flatten().topk(k).indices)


def _inputs(tokenizer: PreTrainedTokenizerBase, rows: MaskedRows | None = None, stats: Stats = Stats()) -> Inputs:
    """Inputs of SECRET: its records and the masked family's tokenizer (records encoded within 32 tokens)."""
    return Inputs(family=MaskedFamily(tokenizer, max_len=32), forget=rows if rows is not None else _rows(tokenizer),
                  records=(SECRET,), stats=stats, seed=0)


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """Deep copy of a model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_desensitize_keeps_shape_and_replaces_every_secret_token(memorized: Memorized) -> None:
    _, tokenizer = memorized
    tel = apneap.desensitize(tokenizer, SECRET, random.Random(0))
    assert (tel.prefix, tel.suffix, tel.id) == (SECRET.prefix, SECRET.suffix, SECRET.id)
    assert len(tel.secret) == len(SECRET.secret) and tel.secret.replace(" ", "").isdigit()
    assert all(a != b for a, b in zip(tel.secret.split(), SECRET.secret.split()))
    assert tel == apneap.desensitize(tokenizer, SECRET, random.Random(0))  # seeded
    name = SecretRecord("NAME-1", "NAME", "ask ", "kathleen zyxwv", " now", 3, False)
    neutral = apneap.desensitize(tokenizer, name, random.Random(1))
    assert apneap.n_tokens(tokenizer, neutral.secret) == apneap.n_tokens(tokenizer, name.secret)
    assert set(neutral.secret.split()) <= set(apneap.NEUTRAL_NAMES)


def test_patch_lowers_gold_probability_of_memorized_secret(memorized: Memorized) -> None:
    model, tokenizer = memorized
    rows = _rows(tokenizer)
    neurons = _top_neurons(model, rows, TOP_K)
    before = float(_gold_probs(model, rows).mean())
    edited = copy.deepcopy(model)
    report = apneap.steer(edited, _inputs(tokenizer, rows), apneap.Config(), neurons)
    after = float(_gold_probs(edited, rows).mean())
    assert after < before - 0.02
    assert report.neurons == neurons and report.trainable > 0


def test_bias_form_equals_activation_hook(memorized: Memorized) -> None:
    model, tokenizer = memorized
    rows = _rows(tokenizer)
    adapter = FFNAdapter.for_model(model)
    vectors = apneap.steering_vectors(model, adapter, apneap.masked_pairs(tokenizer, [SECRET], 0, 32),
                                      _top_neurons(model, rows, TOP_K))
    patch = apneap.activation_patch(vectors, 10.0)  # (L, d_ff)
    with adapter.patch(lambda layer, x: x + patch[layer].to(x.dtype)):
        hooked = masked_logits(model, rows)
    edited = copy.deepcopy(model)
    apneap.apply_patch_as_bias(FFNAdapter.for_model(edited), patch)
    torch.testing.assert_close(masked_logits(edited, rows), hooked, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(masked_logits(model, rows), hooked, atol=1e-3)


def test_bias_form_equals_hook_on_gpt2_conv1d() -> None:
    model = tiny_gpt2(0)
    adapter = FFNAdapter.for_model(model)
    patch = torch.zeros(N_LAYERS, D_FF)
    patch[0, [2, 30]], patch[1, 36] = torch.tensor([1.5, -2.0]), 3.0
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
    with adapter.patch(lambda layer, x: x + patch[layer]):
        hooked = model(input_ids=ids).logits
    assert apneap.apply_patch_as_bias(adapter, patch) == (0, 1)
    torch.testing.assert_close(model(input_ids=ids).logits, hooked, rtol=1e-5, atol=1e-5)


def test_only_biases_of_selected_layers_change(memorized: Memorized) -> None:
    model, tokenizer = memorized
    edited = copy.deepcopy(model)
    adapter = FFNAdapter.for_model(edited)
    before = _snapshot(edited)
    neurons = ((1, 4), (1, 20), (1, 33))
    apneap.steer(edited, _inputs(tokenizer), apneap.Config(alpha=10.0), neurons)
    changed = {k for k, v in edited.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {adapter.weight_names(1)[1]}  # layer 1's down-projection bias only


def test_patch_moves_selected_activations_away_from_the_secret(memorized: Memorized) -> None:
    model, tokenizer = memorized
    adapter = FFNAdapter.for_model(model)
    neurons = _top_neurons(model, _rows(tokenizer), TOP_K)
    pairs = apneap.masked_pairs(tokenizer, [SECRET], 0, 32)
    vectors = apneap.steering_vectors(model, adapter, pairs, neurons)
    patch = apneap.activation_patch(vectors, 10.0)
    plain = apneap.span_activations(model, adapter, pairs.original, pairs.spans, pairs.pad_id)[0]  # (L, d_ff)
    # capture registers after patch, so it records the patched down-projection input
    with adapter.patch(lambda layer, x: x + patch[layer]):
        patched = apneap.span_activations(model, adapter, pairs.original, pairs.spans, pairs.pad_id)[0]
    for layer in sorted({layer for layer, _ in neurons}):
        v = vectors[layer]
        assert float(patched[layer] @ v) < float(plain[layer] @ v)
    off = ~apneap.neuron_mask(adapter, neurons)
    assert bool((vectors[off] == 0).all()) and bool(vectors[~off].abs().sum() > 0)


def test_validation_errors(memorized: Memorized) -> None:
    model, tokenizer = memorized
    adapter = FFNAdapter.for_model(model)
    with pytest.raises(ValueError, match="alpha=0"):
        apneap.Config(alpha=0)
    with pytest.raises(ValueError, match="empty"):
        apneap.check_neurons(adapter, ())
    with pytest.raises(ValueError, match="out of range"):
        apneap.check_neurons(adapter, ((2, 0),))
    with pytest.raises(ValueError, match="duplicate"):
        apneap.check_neurons(adapter, ((0, 1), (0, 1)))
    with pytest.raises(ValueError, match="records is empty"):
        apneap.masked_pairs(tokenizer, [], 0)
    llama = tiny_llama(0)
    before = _snapshot(llama)
    patch = torch.zeros(N_LAYERS, D_FF)
    patch[0, 5] = 1.0  # only layer 0 is patched, so only layer 0 is named
    with pytest.raises(ValueError, match=r"layers \[0\] has no bias"):
        apneap.apply_patch_as_bias(FFNAdapter.for_model(llama), patch)
    assert all(torch.equal(v, before[k]) for k, v in llama.state_dict().items())


def test_pipeline_path_steers_depn_neurons_from_precomputed_ig(memorized: Memorized) -> None:
    """Without explicit neurons, APNEAP patches DEPN's top-k from stats.ig at the same K."""
    from lib.core.ig import IGConfig, integrated_gradients
    from lib.methods import depn

    model, tokenizer = memorized
    rows = _rows(tokenizer)
    ig = integrated_gradients(model, FFNAdapter.for_model(model), rows, IGConfig(steps=4))
    inputs = _inputs(tokenizer, rows, Stats(ig=ig, ig_owner=rows.record_index))
    edited = copy.deepcopy(model)
    outcome = unlearn("apneap", edited, inputs, apneap.Config(k=TOP_K))
    report = outcome.report
    assert report.method == "apneap"
    assert report.neurons == depn.select_depn(ig, rows.record_index, depn.Config(k=TOP_K))
    assert float(_gold_probs(edited, rows).mean()) < float(_gold_probs(model, rows).mean()) - 0.02
    # the edit is bias-only: a neuron patch with no changed columns, replayable onto the input model
    assert isinstance(outcome.edit, NeuronPatch) and outcome.edit.neurons == ()
    assert outcome.edit.layers and all(p.new_bias is not None for p in outcome.edit.layers)
    replayed = copy.deepcopy(model)
    apply_edit(replayed, outcome.edit)
    assert all(torch.equal(v, edited.state_dict()[k]) for k, v in replayed.state_dict().items())
    with pytest.raises(ValueError, match="apneap needs stats.ig"):
        apneap.run(copy.deepcopy(model), _inputs(tokenizer), apneap.Config(k=TOP_K))


# ---------------------------------------------------------------- causal LMs


def test_causal_counterparts_swap_each_span_token_for_a_neutral_one_of_its_kind() -> None:
    """On a causal LM the counterpart is the sample with each private-span token swapped one for one (so positions
    align by construction): digits for digits, a neutral name for a capitalised word, a neutral word otherwise;
    punctuation and special tokens kept, nothing outside the span touched; a sample without a span is private as a
    whole (tokens after the first); one seeded draw."""
    tokenizer = tiny_word_tokenizer()
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    forget = of([ids("w40 w41 John Mary , 7 w42 [EOS]"), ids("w50 w51 3 [EOS]")], [(2, 6), None])
    pairs = apneap.causal_pairs(tokenizer, forget, placeholder_seed=0)
    assert pairs.original == forget.ids and pairs.spans == ((2, 6), (1, 4)) and pairs.pad_id == 0
    first, second = (tokenizer.convert_ids_to_tokens(list(row)) for row in pairs.neutral)
    assert first[:2] == ["w40", "w41"] and first[6:] == ["w42", "[EOS]"] and first[4] == ","
    names = {w.capitalize() for w in apneap.NEUTRAL_NAMES}
    assert first[2] in names - {"John"} and first[3] in names - {"Mary"} and first[5] in set("012345689")
    assert second[0] == "w50" and second[1] in apneap.NEUTRAL_WORDS and second[2] in set("012456789")
    assert second[3] == "[EOS]"
    assert apneap.causal_pairs(tokenizer, forget, 0) == pairs and apneap.causal_pairs(tokenizer, forget, 1) != pairs
    with pytest.raises(ValueError, match="forget is empty"):
        apneap.causal_pairs(tokenizer, of([]), 0)


def test_llama_takes_zero_ffn_biases_and_stays_an_ordinary_checkpoint(tmp_path) -> None:
    """LLaMA has no FFN biases; its config's mlp_bias gives them: zero biases change no output, the saved model
    loads back with transformers as a LLaMA with those biases, and removing them restores the bias-less model."""
    from transformers import LlamaForCausalLM

    model = tiny_llama(0)
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    before = _snapshot(model)
    adapter = FFNAdapter.for_model(model)
    assert adapter.add_ffn_biases() and not adapter.add_ffn_biases()  # the second call finds them in place
    assert model.config.mlp_bias and set(model.state_dict()) - set(before) == set(adapter.bias_names())
    assert len(adapter.bias_names()) == 3 * N_LAYERS  # gate, up and down projections of each layer
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, plain, rtol=1e-6, atol=1e-6)
    adapter.down_proj_bias(1).data[:] = 0.5
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert loaded.state_dict().keys() == model.state_dict().keys()
    adapter.remove_ffn_biases()
    assert not model.config.mlp_bias and model.state_dict().keys() == before.keys()


def test_an_architecture_without_ffn_biases_or_a_flag_is_refused_by_name() -> None:
    """Mistral's MLP has no bias and its config no flag to give one: APNEAP cannot hold its patch there, says so in
    one line naming the types that can, and leaves the model as it was."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=N_LAYERS,
                                             num_attention_heads=3, num_key_value_heads=1, intermediate_size=D_FF))
    before = _snapshot(model)
    tokenizer = tiny_word_tokenizer()
    forget = of([tokenizer("w40 w41 John Mary w42", add_special_tokens=False)["input_ids"]], [(2, 4)])
    inputs = Inputs(family=CausalFamily(tokenizer), forget=forget, seed=0)
    with pytest.raises(ValueError) as err:
        apneap.steer(model, inputs, apneap.Config(), ((0, 1),))
    message = str(err.value)
    assert "\n" not in message and "'mistral'" in message and "llama" in message
    assert _snapshot(model).keys() == before.keys() and all(torch.equal(v, before[k]) for k, v in
                                                            _snapshot(model).items())


def test_a_patch_that_gave_biases_is_a_file_that_applies_and_rolls_back_on_the_bias_less_parent(tmp_path) -> None:
    """The deletion ledger's patch file keeps that the patch gave the FFNs biases: applied to the bias-less parent
    it adds them and gives the child bit for bit; rolled back it removes them and gives the parent's structure."""
    from lib.deletion.patch import apply_patch, load_patch, model_digest, save_patch

    parent = tiny_llama(0)
    child = copy.deepcopy(parent)
    adapter = FFNAdapter.for_model(child)
    before = {n: p.detach().clone() for n, p in parent.named_parameters()}
    adapter.add_ffn_biases()
    with torch.no_grad():
        adapter.down_proj_bias(0).add_(0.25)
    from lib.core.editing import diff_edit

    edit, changed, _total = diff_edit(before, child, "neurons")
    assert edit.biases_added and changed == adapter.d_model and edit.neurons == ()
    save_patch(tmp_path / "p.safetensors", edit, model_digest(parent), model_digest(child))
    loaded, _meta = load_patch(tmp_path / "p.safetensors")
    assert loaded.biases_added
    replay = copy.deepcopy(parent)
    apply_patch(replay, loaded)
    assert model_digest(replay) == model_digest(child)
    apply_patch(replay, loaded, rollback=True)
    assert model_digest(replay) == model_digest(parent) and not replay.config.mlp_bias
