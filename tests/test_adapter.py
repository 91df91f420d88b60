"""Tests for lib.core.adapter: neuron definition invariants, column I/O, hooks."""

from __future__ import annotations

import pytest
import torch
from transformers import (AlbertConfig, AlbertForMaskedLM, AutoConfig, AutoModel, BertConfig, BertModel, DebertaConfig,
                          DebertaForMaskedLM, DebertaV2Config, DebertaV2ForMaskedLM, ElectraConfig, ElectraForMaskedLM,
                          PreTrainedModel, RobertaConfig, RobertaForMaskedLM)

from lib.core.adapter import ARCHITECTURES, UNSUPPORTED, FFNAdapter, FFNSpec
from lib.core.models import check_family
from tests.tiny_models import ALL_TINY, D_FF, HIDDEN, MAX_POS, N_LAYERS, VOCAB

NAMES = sorted(ALL_TINY)
_SIZES = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS, num_attention_heads=3,
              intermediate_size=D_FF, max_position_embeddings=MAX_POS)


def tiny_electra(seed: int = 0) -> ElectraForMaskedLM:
    """Tiny ELECTRA generator MLM (its embeddings are narrower than the hidden states, as in ELECTRA)."""
    torch.manual_seed(seed)
    return ElectraForMaskedLM(ElectraConfig(embedding_size=16, **_SIZES)).eval()


def tiny_deberta(seed: int = 0) -> DebertaForMaskedLM:
    """Tiny DeBERTa MLM with disentangled (relative-position) attention."""
    torch.manual_seed(seed)
    config = DebertaConfig(relative_attention=True, pos_att_type=["c2p", "p2c"], **_SIZES)
    return DebertaForMaskedLM(config).eval()


def tiny_deberta_v2(seed: int = 0) -> DebertaV2ForMaskedLM:
    """Tiny DeBERTa-v2 MLM with disentangled (relative-position) attention."""
    torch.manual_seed(seed)
    config = DebertaV2Config(relative_attention=True, pos_att_type=["c2p", "p2c"], **_SIZES)
    return DebertaV2ForMaskedLM(config).eval()


def tiny_roberta(seed: int = 0) -> RobertaForMaskedLM:
    """Tiny RoBERTa MLM (positions start after the padding id, so two more position embeddings)."""
    torch.manual_seed(seed)
    return RobertaForMaskedLM(RobertaConfig(**{**_SIZES, "max_position_embeddings": MAX_POS + 2})).eval()


# masked LMs the adapter gained with the restructuring (their layers have no separate Q/K/V paths for DeBERTa,
# so they join the tests that need no attention paths)
EXTRA_MASKED = {"electra": tiny_electra, "deberta": tiny_deberta, "deberta-v2": tiny_deberta_v2, "roberta": tiny_roberta}
ALL_NAMES = NAMES + sorted(EXTRA_MASKED)


def _build(name: str, seed: int = 0) -> PreTrainedModel:
    """A tiny model of any architecture tested here."""
    return {**ALL_TINY, **EXTRA_MASKED, "roberta": tiny_roberta}[name](seed=seed)


def _inputs(seed: int = 0, batch: int = 2, length: int = 9) -> dict[str, torch.Tensor]:
    """Random token ids (avoiding special ids 0-2) and a full attention mask."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 101, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _hook_count(adapter: FFNAdapter) -> int:
    """Number of forward pre-hooks currently registered on all down-projections."""
    return sum(len(adapter.down_proj(l)._forward_pre_hooks) for l in range(adapter.n_layers))


@pytest.fixture(params=NAMES)
def model_and_adapter(request: pytest.FixtureRequest):
    """Each tiny architecture with its adapter."""
    model = ALL_TINY[request.param](seed=0)
    return model, FFNAdapter.for_model(model)


@pytest.fixture(params=ALL_NAMES)
def any_model_and_adapter(request: pytest.FixtureRequest):
    """Each tiny architecture, the new masked ones included, with its adapter."""
    model = _build(request.param)
    assert model.config.model_type == request.param
    return model, FFNAdapter.for_model(model)


def test_dimensions(any_model_and_adapter) -> None:
    model, adapter = any_model_and_adapter
    assert (adapter.n_layers, adapter.d_ff, adapter.d_model) == (N_LAYERS, D_FF, HIDDEN)
    assert adapter.neuron_count() == N_LAYERS * D_FF


def test_hook_zeroing_equals_weight_zeroing(any_model_and_adapter) -> None:
    model, adapter = any_model_and_adapter
    inputs = _inputs()
    layer, neurons = 1, torch.tensor([0, 5, 36])
    with torch.no_grad():
        base = model(**inputs).logits
        with adapter.scale_neurons({layer: (neurons, torch.zeros(3))}):
            hooked = model(**inputs).logits
        adapter.set_columns(layer, neurons, torch.zeros(3, adapter.d_model))
        edited = model(**inputs).logits
    assert not torch.allclose(base, hooked, atol=1e-5)  # the edit must matter
    torch.testing.assert_close(hooked, edited, atol=1e-5, rtol=0)


def test_patch_zeroing_single_neuron_each_layer(any_model_and_adapter) -> None:
    model, adapter = any_model_and_adapter
    inputs = _inputs(seed=1)

    def zero7(layer: int, x: torch.Tensor) -> torch.Tensor:
        return x.index_fill(-1, torch.tensor([7]), 0.0)

    with torch.no_grad():
        with adapter.patch(zero7):
            hooked = model(**inputs).logits
        for layer in range(adapter.n_layers):
            adapter.set_columns(layer, torch.tensor([7]), torch.zeros(1, adapter.d_model))
        edited = model(**inputs).logits
    torch.testing.assert_close(hooked, edited, atol=1e-5, rtol=0)


def _ffn_only_moves_its_position(model: torch.nn.Module, adapter: FFNAdapter) -> None:
    """Shifting ffn_input's input at position 3 changes the last layer's down-proj input and the
    block output at position 3 only: that input feeds the position-wise FFN, not the residual."""
    layer, inputs = adapter.n_layers - 1, _inputs(seed=2)
    block_out = []

    def bump(_mod: torch.nn.Module, args: tuple) -> tuple:
        """Add 1 to the FFN input at position 3."""
        x = args[0].clone()
        x[:, 3] += 1.0
        return (x, *args[1:])

    def keep(_mod: torch.nn.Module, _args: tuple, out: object) -> None:
        """Record the block's hidden-state output."""
        block_out.append(out[0] if isinstance(out, tuple) else out)

    handle = adapter.block(layer).register_forward_hook(keep)
    try:
        with torch.no_grad(), adapter.capture([layer]) as plain:
            model(**inputs)
        bump_handle = adapter.ffn_input(layer).register_forward_pre_hook(bump)
        with torch.no_grad(), adapter.capture([layer]) as bumped:
            model(**inputs)
        bump_handle.remove()
    finally:
        handle.remove()
    others = [t for t in range(inputs["input_ids"].shape[1]) if t != 3]
    for before, after in ((plain[layer], bumped[layer]), (block_out[0], block_out[1])):
        assert not torch.allclose(before[:, 3], after[:, 3])
        torch.testing.assert_close(before[:, others], after[:, others], rtol=0, atol=0)


def _projections_position_wise(model: torch.nn.Module, adapter: FFNAdapter) -> None:
    """Shifting the last layer's input at position 3 changes its attention-input projections there only."""
    layer, inputs = adapter.n_layers - 1, _inputs(seed=3)
    projections = adapter.attention_inputs(layer)
    recorded: list[torch.Tensor] = []  # every projection's output, plain run then bumped run

    def bump(_mod: torch.nn.Module, args: tuple) -> tuple:
        """Add 1 to the layer input (hidden states) at position 3."""
        x = args[0].clone()
        x[:, 3] += 1.0
        return (x, *args[1:])

    def keep(_mod: torch.nn.Module, _args: tuple, out: torch.Tensor) -> None:
        """Record a projection output."""
        recorded.append(out)

    handles = [proj.register_forward_hook(keep) for proj in projections]
    try:
        with torch.no_grad():
            model(**inputs)
            handles.append(adapter.block(layer).register_forward_pre_hook(bump))
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    others = [t for t in range(inputs["input_ids"].shape[1]) if t != 3]
    for before, after in zip(recorded[:len(projections)], recorded[len(projections):]):
        assert not torch.allclose(before[:, 3], after[:, 3])
        torch.testing.assert_close(before[:, others], after[:, others], rtol=0, atol=0)


def test_block_attention_and_ffn_input(model_and_adapter) -> None:
    """block(l) holds l's attention (with its input and output projections), FFN input and
    down-projection; the FFN input path and the attention-input projections are position-wise."""
    model, adapter = model_and_adapter
    for layer in range(adapter.n_layers):
        inside = list(adapter.block(layer).modules())
        for module in (adapter.attention(layer), adapter.ffn_input(layer), adapter.down_proj(layer)):
            assert any(module is m for m in inside)
        in_attention = list(adapter.attention(layer).modules())
        assert adapter.attention_inputs(layer) and adapter.attention_output(layer) is not None
        assert all(any(proj is m for m in in_attention)
                   for proj in (*adapter.attention_inputs(layer), adapter.attention_output(layer)))
        query = adapter.attention_query(layer)
        assert query is None or any(query is proj for proj in adapter.attention_inputs(layer))
    _ffn_only_moves_its_position(model, adapter)
    _projections_position_wise(model, adapter)


def test_get_set_round_trip(any_model_and_adapter) -> None:
    model, adapter = any_model_and_adapter
    neurons = torch.tensor([3, 1, 30])
    before = adapter.get_columns(0, neurons)
    assert before.shape == (3, HIDDEN)
    new = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(0))
    adapter.set_columns(0, neurons, new)
    torch.testing.assert_close(adapter.get_columns(0, neurons), new)
    # the returned tensor is a copy, and other neurons are untouched
    untouched = adapter.get_columns(0, torch.tensor([2, 4]))
    adapter.get_columns(0, neurons).zero_()
    torch.testing.assert_close(adapter.get_columns(0, neurons), new)
    adapter.set_columns(0, neurons, before)
    torch.testing.assert_close(adapter.get_columns(0, torch.tensor([2, 4])), untouched)


def test_column_is_output_weight_vector(any_model_and_adapter) -> None:
    """A one-hot activation on neuron i moves the down-proj output by exactly column i."""
    _, adapter = any_model_and_adapter
    module = adapter.down_proj(0)
    x = torch.zeros(1, 1, D_FF)
    x[..., 11] = 1.0
    with torch.no_grad():
        delta = module(x) - module(torch.zeros(1, 1, D_FF))
    torch.testing.assert_close(delta.reshape(-1), adapter.get_columns(0, torch.tensor([11]))[0])


def test_capture_shapes(any_model_and_adapter) -> None:
    model, adapter = any_model_and_adapter
    with torch.no_grad(), adapter.capture() as acts:
        model(**_inputs(batch=3, length=8))
    assert sorted(acts) == list(range(N_LAYERS))
    assert all(a.shape == (3, 8, D_FF) for a in acts.values())
    assert _hook_count(adapter) == 0


def test_capture_subset_and_graph(model_and_adapter) -> None:
    model, adapter = model_and_adapter
    with adapter.capture(layers=[1], detach=False) as acts:
        logits = model(**_inputs()).logits
    assert list(acts) == [1] and acts[1].requires_grad
    (grad,) = torch.autograd.grad(logits[0, -1, 5], [acts[1]])
    assert grad.shape == acts[1].shape and grad.abs().sum() > 0


def test_hooks_removed_on_exception(model_and_adapter) -> None:
    model, adapter = model_and_adapter
    with pytest.raises(RuntimeError, match="boom"):
        with adapter.capture():
            assert _hook_count(adapter) == N_LAYERS
            raise RuntimeError("boom")
    assert _hook_count(adapter) == 0

    def failing(layer: int, x: torch.Tensor) -> torch.Tensor:
        raise KeyError("inside hook")

    with pytest.raises(KeyError):
        with adapter.patch(failing):
            model(**_inputs())
    assert _hook_count(adapter) == 0


def test_weight_names_in_state_dict(any_model_and_adapter) -> None:
    model, adapter = any_model_and_adapter
    state = model.state_dict()
    for layer in range(adapter.n_layers):
        names = adapter.weight_names(layer)
        assert names[0].endswith(".weight") and all(n in state for n in names)
        assert state[names[0]].data_ptr() == adapter.down_proj(layer).weight.data_ptr()
        assert f".{layer}." in names[0]
        has_bias = adapter.down_proj_bias(layer) is not None
        assert len(names) == 1 + has_bias


def test_unknown_model_type() -> None:
    model = ALL_TINY["bert"]()
    model.config.model_type = "mystery_arch"
    with pytest.raises(ValueError, match=r"unknown model_type 'mystery_arch'; allowed: .*bert.*gpt2"):
        FFNAdapter.for_model(model)


def test_validation_errors() -> None:
    adapter = FFNAdapter.for_model(ALL_TINY["gpt2"]())
    with pytest.raises(ValueError, match="layer=2 out of range"):
        adapter.down_proj(2)
    with pytest.raises(ValueError, match="neuron index out of range"):
        adapter.get_columns(0, torch.tensor([37]))
    with pytest.raises(ValueError, match="values shape"):
        adapter.set_columns(0, torch.tensor([1, 2]), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="duplicate"):
        adapter.set_columns(0, torch.tensor([1, 1]), torch.zeros(2, HIDDEN))
    with pytest.raises(ValueError, match="factors"):
        with adapter.scale_neurons({0: (torch.tensor([1, 2]), torch.ones(3))}):
            pass
    with pytest.raises(ValueError, match="path 'blocks' not found"):
        FFNAdapter(adapter.model, FFNSpec(family="causal", layers="blocks", down_proj="mlp.c_proj", neuron_axis=0))


def test_scale_neurons_scalar_factor_doubles_activation() -> None:
    model = ALL_TINY["llama"]()
    adapter = FFNAdapter.for_model(model)
    inputs = _inputs()
    with torch.no_grad(), adapter.capture(layers=[0]) as plain:
        model(**inputs)
    with torch.no_grad(), adapter.scale_neurons({0: (torch.tensor([4]), torch.tensor(2.0))}):
        with adapter.capture(layers=[0]) as scaled:
            model(**inputs)
    torch.testing.assert_close(scaled[0][..., 4], 2 * plain[0][..., 4])
    torch.testing.assert_close(scaled[0][..., 5], plain[0][..., 5])


def test_gpt2_conv1d_transpose() -> None:
    """GPT-2 stores c_proj as [d_ff, d_model]; columns must come from rows of that weight."""
    adapter = FFNAdapter.for_model(ALL_TINY["gpt2"]())
    weight = adapter.down_proj(0).weight
    assert weight.shape == (D_FF, HIDDEN)
    torch.testing.assert_close(adapter.get_columns(0, torch.tensor([9]))[0], weight[9])


_EXTRA_CONFIGS = {
    "distilbert": dict(dim=24, hidden_dim=37, n_layers=2, n_heads=3),
    "roberta": dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3),
    "gpt_neox": dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3),
    "olmo": dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3),
    "olmo2": dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3),
    "mistral": dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3,
                    num_key_value_heads=1, head_dim=8),
    "qwen2": dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3,
                  num_key_value_heads=1),
}


@pytest.mark.parametrize("model_type", sorted(_EXTRA_CONFIGS))
def test_registry_paths_resolve(model_type: str) -> None:
    """Every registered family named in the brief resolves to a (37-neuron) down-projection."""
    assert model_type in ARCHITECTURES
    config = AutoConfig.for_model(model_type, vocab_size=101, **_EXTRA_CONFIGS[model_type])
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    adapter = FFNAdapter.for_model(model)
    assert (adapter.n_layers, adapter.d_ff, adapter.d_model) == (2, 37, 24)
    _ffn_only_moves_its_position(model, adapter)
    _projections_position_wise(model, adapter)


def test_plain_base_model_supported() -> None:
    """A headless BertModel (base_model is itself) works too."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=101, hidden_size=24, num_hidden_layers=2,
                                 num_attention_heads=3, intermediate_size=37))
    adapter = FFNAdapter.for_model(model)
    assert adapter.weight_names(0) == ["encoder.layer.0.output.dense.weight",
                                       "encoder.layer.0.output.dense.bias"]


def test_albert_is_rejected_with_the_reason(tmp_path) -> None:
    """ALBERT shares one layer's weights across layers: the adapter (and the model loader) refuse it in one
    line naming why."""
    torch.manual_seed(0)
    model = AlbertForMaskedLM(AlbertConfig(embedding_size=16, **_SIZES)).eval()
    assert "albert" in UNSUPPORTED and "albert" not in ARCHITECTURES
    with pytest.raises(ValueError, match=r"model_type 'albert' is not supported: ALBERT shares") as err:
        FFNAdapter.for_model(model)
    assert "\n" not in str(err.value) and "allowed: " in str(err.value)
    model.save_pretrained(tmp_path / "albert")
    with pytest.raises(ValueError, match=r"model_type 'albert' is not supported: ALBERT shares"):
        check_family(str(tmp_path / "albert"), "masked")


@pytest.mark.parametrize("name", ["bert", "roberta", "electra", "deberta-v2"])
def test_logits_at_equals_full_forward(name: str) -> None:
    """logits_at (the LM head on chosen positions only, where the entry names it) equals the full forward there."""
    model = _build(name, seed=1)
    adapter = FFNAdapter.for_model(model)
    inputs = _inputs(seed=4, batch=3, length=9)
    mask = inputs["attention_mask"].clone()
    mask[1, 6:] = 0  # a right-padded row
    rows, positions = torch.tensor([0, 2, 1, 0, 2]), torch.tensor([3, 0, 5, 8, 8])
    with torch.no_grad():
        full = model(input_ids=inputs["input_ids"], attention_mask=mask).logits  # (B, T, V)
        picked = adapter.logits_at(inputs["input_ids"], mask, rows, positions)  # (n, V)
    assert picked.shape == (5, VOCAB)
    torch.testing.assert_close(picked, full[rows, positions], rtol=0, atol=1e-5)


def test_check_family_refuses_the_other_family(tmp_path) -> None:
    """A saved checkpoint is accepted for its own family and refused, naming the allowed types, for the other."""
    masked_dir, causal_dir = tmp_path / "bert", tmp_path / "gpt2"
    ALL_TINY["bert"]().save_pretrained(masked_dir)
    ALL_TINY["gpt2"]().save_pretrained(causal_dir)
    assert check_family(str(masked_dir), "masked") == "bert"
    assert check_family(str(causal_dir), "causal") == "gpt2"
    with pytest.raises(ValueError, match=r"model_type 'gpt2'; masked LM families allowed: .*bert.*deberta-v2.*electra"):
        check_family(str(causal_dir), "masked")
    with pytest.raises(ValueError, match=r"model_type 'bert'; causal LM families allowed: .*gpt2.*llama"):
        check_family(str(masked_dir), "causal")
    with pytest.raises(ValueError, match="family 'seq2seq' unknown"):
        check_family(str(masked_dir), "seq2seq")
