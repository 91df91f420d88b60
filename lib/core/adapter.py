"""Architecture adapter for FFN neurons: locate, read/write, capture and patch them.

An FFN neuron is, everywhere in this project, coordinate i of the INPUT of a layer's
FFN down-projection (post-activation; for gated MLPs after act(gate) * up). Its
"output-weight vector" is the matching column of the down-projection weight.

This module is the only place that knows architectures: per Hugging Face `model_type`,
as data (`ARCHITECTURES`), the family (masked or causal LM), module paths, the weight axis
that indexes a projection's inputs (nn.Linear 1, GPT-2's Conv1D 0) and the LM head modules
that can run on chosen positions only. Adding an architecture is one entry.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

FAMILIES = ("masked", "causal")


@dataclass(frozen=True)
class FFNSpec:
    """Where the FFN down-projection lives in one architecture family."""

    family: str  # "masked" (BERT-style MLM) or "causal" (decoder-only LM)
    layers: str  # attribute path of the layer ModuleList relative to model.base_model
    down_proj: str  # attribute path of the down-projection inside one layer
    neuron_axis: int  # weight axis indexing a projection's inputs (nn.Linear: 1, GPT-2 Conv1D: 0)
    # the model's modules after the base model, applied in order to its last hidden state (B, n, d) to give
    # logits; () when the head cannot run on chosen positions alone (then the whole model runs)
    head: tuple[str, ...] = ()
    # the base model's norm after its last layer (decoder-only LMs: the LM head reads the normed last layer); the
    # logit lens applies it, then the LM head, to any layer's output. None: the head reads a layer's output as is
    final_norm: str | None = None
    # Optional paths inside one layer, for IG's shortcuts (lib.core.ig); None / () where unknown:
    ffn_in: str | None = None  # module whose first input feeds only the position-wise FFN
    attention: str | None = None  # the self-attention module (a function of the layer's input)
    attn_in: tuple[str, ...] = ()  # its input projections (Q, K, V or one fused), position-wise
    attn_query: str | None = None  # its query projection, where separate from K and V
    attn_out: str | None = None  # its output projection (position-wise on the per-query outputs)
    # A config flag that gives the FFN's projections biases (LLaMA's mlp_bias), and those projections inside one
    # layer: a model without a down-projection bias can take one (zero biases first: the function is unchanged)
    # and stay an ordinary checkpoint of its architecture. None: the architecture has no such flag.
    bias_flag: str | None = None
    bias_modules: tuple[str, ...] = ()


def _separate_qkv(attention: str, names: tuple[str, str, str], out: str) -> dict[str, Any]:
    """Attention paths of a family with separate Q, K, V projections named `names`."""
    return {"attention": attention, "attn_in": tuple(f"{attention}.{name}" for name in names),
            "attn_query": f"{attention}.{names[0]}", "attn_out": f"{attention}.{out}"}


_BERT_LAYER = {"layers": "encoder.layer", "down_proj": "output.dense", "neuron_axis": 1, "ffn_in": "intermediate",
               **_separate_qkv("attention", ("self.query", "self.key", "self.value"), "output.dense")}
_BERT_LIKE = FFNSpec(family="masked", head=("cls",), **_BERT_LAYER)
_ROBERTA_LIKE = FFNSpec(family="masked", head=("lm_head",), **_BERT_LAYER)
# DeBERTa's disentangled attention also projects relative positions, so IG replays it whole (no attn_in paths)
# no head: DeBERTa's non-legacy MLM head also takes the word embeddings, so logits_at runs the whole model
_DEBERTA = FFNSpec(family="masked", layers="encoder.layer", down_proj="output.dense", neuron_axis=1,
                   ffn_in="intermediate", attention="attention", attn_out="attention.output.dense")
_GATED = FFNSpec(family="causal", layers="layers", down_proj="mlp.down_proj", neuron_axis=1, ffn_in="mlp",
                 final_norm="norm", **_separate_qkv("self_attn", ("q_proj", "k_proj", "v_proj"), "o_proj"))
_LLAMA = replace(_GATED, bias_flag="mlp_bias", bias_modules=("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))

# Keyed by HF `config.model_type`; adding an architecture is a one-line data change.
ARCHITECTURES: dict[str, FFNSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _ROBERTA_LIKE,
    "xlm-roberta": _ROBERTA_LIKE,
    "electra": FFNSpec(family="masked", head=("generator_predictions", "generator_lm_head"), **_BERT_LAYER),
    "deberta": _DEBERTA,
    "deberta-v2": _DEBERTA,
    "distilbert": FFNSpec(family="masked", layers="transformer.layer", down_proj="ffn.lin2", neuron_axis=1,
                          ffn_in="ffn", **_separate_qkv("attention", ("q_lin", "k_lin", "v_lin"), "out_lin")),
    "gpt2": FFNSpec(family="causal", layers="h", down_proj="mlp.c_proj", neuron_axis=0, ffn_in="mlp",
                    final_norm="ln_f", attention="attn", attn_in=("attn.c_attn",), attn_out="attn.c_proj"),
    "gpt_neo": FFNSpec(family="causal", layers="h", down_proj="mlp.c_proj", neuron_axis=1, ffn_in="mlp",
                       final_norm="ln_f",
                       **_separate_qkv("attn", ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
                                       "attention.out_proj")),
    "gpt_neox": FFNSpec(family="causal", layers="layers", down_proj="mlp.dense_4h_to_h", neuron_axis=1,
                        ffn_in="mlp", final_norm="final_layer_norm", attention="attention",
                        attn_in=("attention.query_key_value",), attn_out="attention.dense"),
    "llama": _LLAMA,
    "olmo": _GATED,
    "olmo2": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "gemma": _GATED,
    "gemma2": _GATED,
}
# Known architectures whose FFN neurons this project cannot edit, with the reason (named in the error).
UNSUPPORTED: dict[str, str] = {
    "albert": "ALBERT shares one layer's weights across all its layers, so an FFN neuron is not a per-layer unit",
}


def spec_of(model_type: str | None) -> FFNSpec:
    """The FFNSpec of a `config.model_type`; unknown or unsupported types name what is allowed."""
    if model_type in UNSUPPORTED:
        raise ValueError(f"model_type {model_type!r} is not supported: {UNSUPPORTED[model_type]}; "
                         f"allowed: {', '.join(sorted(ARCHITECTURES))}")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model_type {model_type!r}; allowed: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[model_type]


def lens_types() -> tuple[str, ...]:
    """The model types the logit lens can read (a final norm named, or a position-wise MLM head)."""
    return tuple(sorted(t for t, spec in ARCHITECTURES.items()
                        if (spec.family == "causal" and spec.final_norm) or (spec.family == "masked" and spec.head)))


def family_types(family: str) -> tuple[str, ...]:
    """The model types of one family ("masked" or "causal")."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} unknown; allowed: {', '.join(FAMILIES)}")
    return tuple(sorted(t for t, spec in ARCHITECTURES.items() if spec.family == family))


@dataclass(frozen=True)
class TargetRows:
    """One row per scored target token (a family's `target_rows`): its input, where it is scored, its sample."""

    input_ids: Tensor  # (R, T) right-padded
    attention_mask: Tensor  # (R, T)
    positions: Tensor  # (R,) the position whose logits predict the gold token
    gold_ids: Tensor  # (R,)
    sample: Tensor  # (R,) the sample each row belongs to

    def __len__(self) -> int:
        """Number of rows."""
        return int(self.input_ids.shape[0])

    def take(self, index: Tensor | slice, device: torch.device | None = None) -> "TargetRows":
        """Rows `index` (on `device` when given)."""
        picked = (getattr(self, name)[index] for name in self.__dataclass_fields__)
        return TargetRows(*(t.to(device) if device is not None else t for t in picked))


LayerFn = Callable[[int, Tensor], Tensor]


def _resolve(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path (ModuleList indices allowed) from root."""
    try:
        return functools.reduce(getattr, path.split("."), root)
    except AttributeError as err:
        raise ValueError(f"module path {path!r} not found under {type(root).__name__}") from err


def _weight_shape(module: nn.Module, spec: FFNSpec) -> tuple[int, int]:
    """Return (d_ff, d_model) read from a down-projection weight."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(f"down-projection {type(module).__name__} has no 2-D weight")
    return weight.shape[spec.neuron_axis], weight.shape[1 - spec.neuron_axis]


class FFNAdapter:
    """Uniform view of the FFN neurons of one HF model (see module docstring)."""

    def __init__(self, model: nn.Module, spec: FFNSpec) -> None:
        """Bind to `model` using `spec`; raises ValueError if paths or sizes do not fit."""
        if spec.neuron_axis not in (0, 1):
            raise ValueError(f"neuron_axis={spec.neuron_axis} invalid; allowed: 0 or 1")
        self.model, self.spec = model, spec
        base = getattr(model, "base_model", model)
        layers = _resolve(base, spec.layers)
        self._blocks = list(layers)
        self._down = [_resolve(layer, spec.down_proj) for layer in layers]
        self._ffn_in = [_resolve(layer, spec.ffn_in) if spec.ffn_in else None for layer in layers]
        self._attention = [_resolve(layer, spec.attention) if spec.attention else None for layer in layers]
        self._attn_in = [[_resolve(layer, path) for path in spec.attn_in] for layer in layers]
        self._attn_query = [_resolve(layer, spec.attn_query) if spec.attn_query else None for layer in layers]
        self._attn_out = [_resolve(layer, spec.attn_out) if spec.attn_out else None for layer in layers]
        if not self._down:
            raise ValueError(f"layer list {spec.layers!r} is empty")
        shapes = {_weight_shape(m, spec) for m in self._down}
        if len(shapes) != 1:
            raise ValueError(f"down-projection shapes differ across layers: {sorted(shapes)}")
        self._d_ff, self._d_model = shapes.pop()

    @classmethod
    def for_model(cls, model: nn.Module) -> "FFNAdapter":
        """Build the adapter from `model.config.model_type` via ARCHITECTURES."""
        return cls(model, spec_of(getattr(getattr(model, "config", None), "model_type", None)))

    @property
    def family(self) -> str:
        """"masked" or "causal"."""
        return self.spec.family

    @property
    def n_layers(self) -> int:
        """Number of transformer layers (each with one FFN)."""
        return len(self._down)

    @property
    def d_ff(self) -> int:
        """Neurons per layer (down-projection input width)."""
        return self._d_ff

    @property
    def d_model(self) -> int:
        """Residual-stream width (down-projection output width)."""
        return self._d_model

    def neuron_count(self) -> int:
        """Total number of FFN neurons in the model."""
        return self.n_layers * self.d_ff

    def _check_layer(self, layer: int) -> int:
        """Validate a layer index and return it."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer={layer!r} out of range; allowed: 0..{self.n_layers - 1}")
        return layer

    def _check_neurons(self, neurons: Tensor) -> Tensor:
        """Validate a 1-D integer neuron index tensor and return it as int64."""
        if neurons.dim() != 1 or neurons.is_floating_point():
            raise ValueError(f"neurons must be a 1-D integer tensor, got shape {tuple(neurons.shape)}")
        if neurons.numel() and not (0 <= int(neurons.min()) and int(neurons.max()) < self.d_ff):
            raise ValueError(
                f"neuron index out of range [{int(neurons.min())}, {int(neurons.max())}]; "
                f"allowed: 0..{self.d_ff - 1}"
            )
        return neurons.long()

    def down_proj(self, layer: int) -> nn.Module:
        """The down-projection module of `layer`."""
        return self._down[self._check_layer(layer)]

    def block(self, layer: int) -> nn.Module:
        """The transformer layer (block) module of `layer`."""
        return self._blocks[self._check_layer(layer)]

    def ffn_input(self, layer: int) -> nn.Module | None:
        """The module whose first input is `layer`'s FFN input (B, T, d_model), or None if unknown."""
        return self._ffn_in[self._check_layer(layer)]

    def attention(self, layer: int) -> nn.Module | None:
        """The self-attention module of `layer`, or None if unknown."""
        return self._attention[self._check_layer(layer)]

    def attention_inputs(self, layer: int) -> list[nn.Module]:
        """The self-attention's input projections of `layer` (each position-wise), [] if unknown."""
        return list(self._attn_in[self._check_layer(layer)])

    def attention_query(self, layer: int) -> nn.Module | None:
        """The self-attention's query projection of `layer`, or None if unknown or fused with K, V."""
        return self._attn_query[self._check_layer(layer)]

    def attention_output(self, layer: int) -> nn.Module | None:
        """The self-attention's output projection of `layer`, or None if unknown."""
        return self._attn_out[self._check_layer(layer)]

    def attention_width(self, layer: int) -> int:
        """Inputs of `layer`'s attention output projection (its "attention neurons")."""
        module = self._require_attention_output(layer)
        return module.weight.shape[self.spec.neuron_axis]

    def zero_attention_inputs(self, layer: int, neurons: Tensor) -> None:
        """Zero the output-projection weights of attention neurons `neurons` of `layer` (their columns)."""
        module = self._require_attention_output(layer)
        idx = neurons.long().to(module.weight.device)
        width = self.attention_width(layer)
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < width):
            raise ValueError(f"attention neuron index out of range; allowed: 0..{width - 1}")
        with torch.no_grad():
            module.weight.index_fill_(self.spec.neuron_axis, idx, 0.0)

    def _require_attention_output(self, layer: int) -> nn.Module:
        """The attention output projection of `layer`; ValueError when the architecture's entry lacks it."""
        module = self.attention_output(layer)
        if module is None:
            raise ValueError(f"model_type {self.model.config.model_type!r}: attention output projection unknown; "
                             "allowed: an ARCHITECTURES entry with attn_out")
        return module

    def logits_at(self, input_ids: Tensor, attention_mask: Tensor, rows: Tensor, positions: Tensor) -> Tensor:
        """Logits (n, V) at the (row, position) pairs; the LM head runs only there when the entry names it."""
        model = self.model
        device = next(model.parameters()).device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        rows, positions = rows.to(device), positions.to(device)
        # hooks on the whole model (tests, adapters) must see a whole-model forward
        if not self.spec.head or model._forward_hooks or model._forward_pre_hooks:
            return model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, positions]  # (n, V)
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
        out = hidden[rows, positions]  # (n, d)
        for name in self.spec.head:
            out = _resolve(model, name)(out)
        return out  # (n, V)

    def lens(self, hidden: Tensor) -> Tensor:
        """Logit lens: a layer's output (..., d) read by the LM head as if it were the last layer's, (..., V)."""
        if self.spec.family == "causal" and self.spec.final_norm is None:
            raise ValueError(f"model_type {self.model.config.model_type!r} names no final norm, so the logit lens "
                             f"cannot read its layers; allowed: {', '.join(lens_types())}")
        if self.spec.family == "masked" and not self.spec.head:
            raise ValueError(f"model_type {self.model.config.model_type!r} has no position-wise MLM head to read its "
                             f"layers with; allowed: {', '.join(lens_types())}")
        out = hidden
        if self.spec.final_norm is not None:
            out = _resolve(self.model.base_model, self.spec.final_norm)(out)
        heads = [_resolve(self.model, name) for name in self.spec.head] or [self.model.get_output_embeddings()]
        for head in heads:
            out = head(out)
        return out

    def down_proj_bias(self, layer: int) -> Tensor | None:
        """The down-projection bias (d_model,) of `layer`, or None if it has none."""
        return getattr(self.down_proj(layer), "bias", None)

    def bias_names(self) -> list[str]:
        """Parameter names of the biases the architecture's bias flag gives every layer's FFN ([] without a flag)."""
        return [f"{self._module_name(_resolve(self.block(layer), path))}.bias"
                for layer in range(self.n_layers) for path in self.spec.bias_modules]

    def add_ffn_biases(self) -> bool:
        """Give every down-projection a bias: zero biases on the projections the config flag covers, the flag set
        (the function is unchanged); False when each already has one. ValueError when the architecture has none."""
        if all(self.down_proj_bias(layer) is not None for layer in range(self.n_layers)):
            return False
        model_type = getattr(self.model.config, "model_type", None)
        if self.spec.bias_flag is None:
            flagged = sorted(t for t, spec in ARCHITECTURES.items() if spec.bias_flag)
            raise ValueError(f"model_type {model_type!r} has no FFN down-projection bias and no config flag to give "
                             f"it one; allowed: models whose down-projection has a bias, or model types "
                             f"{', '.join(flagged)}")
        setattr(self.model.config, self.spec.bias_flag, True)
        for layer in range(self.n_layers):
            for path in self.spec.bias_modules:
                module = _resolve(self.block(layer), path)
                if getattr(module, "bias", None) is None:
                    weight = module.weight
                    module.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
        return True

    def remove_ffn_biases(self) -> None:
        """Undo add_ffn_biases: the flag's projections lose their biases and the flag is cleared."""
        if self.spec.bias_flag is None:
            raise ValueError(f"model_type {getattr(self.model.config, 'model_type', None)!r} has no FFN bias flag")
        setattr(self.model.config, self.spec.bias_flag, False)
        for layer in range(self.n_layers):
            for path in self.spec.bias_modules:
                _resolve(self.block(layer), path).register_parameter("bias", None)

    def _module_name(self, module: nn.Module) -> str:
        """The qualified name of one of the model's modules."""
        return next(name for name, mod in self.model.named_modules() if mod is module)

    def get_columns(self, layer: int, neurons: Tensor) -> Tensor:
        """Copy of the output-weight vectors of `neurons` in `layer`: (k, d_model)."""
        weight = self.down_proj(layer).weight
        idx = self._check_neurons(neurons).to(weight.device)
        with torch.no_grad():
            cols = weight.index_select(self.spec.neuron_axis, idx)
        return (cols.T if self.spec.neuron_axis == 1 else cols).clone()  # (k, d_model)

    def set_columns(self, layer: int, neurons: Tensor, values: Tensor) -> None:
        """Overwrite the output-weight vectors of `neurons` in `layer` with `values` (k, d_model)."""
        weight = self.down_proj(layer).weight
        idx = self._check_neurons(neurons).to(weight.device)
        if tuple(values.shape) != (idx.numel(), self.d_model):
            raise ValueError(
                f"values shape {tuple(values.shape)} invalid; expected ({idx.numel()}, {self.d_model})"
            )
        if idx.unique().numel() != idx.numel():
            raise ValueError("neurons contains duplicate indices; each neuron may be set once")
        src = values.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            weight.index_copy_(self.spec.neuron_axis, idx, src.T if self.spec.neuron_axis == 1 else src)

    def weight_names(self, layer: int) -> list[str]:
        """state_dict names of `layer`'s down-projection weight (and bias if present)."""
        prefix = self._module_name(self.down_proj(layer))
        names = [f"{prefix}.weight"]
        return names + ([f"{prefix}.bias"] if self.down_proj_bias(layer) is not None else [])

    def _layer_list(self, layers: Iterable[int] | None) -> list[int]:
        """Validated sorted layer indices; None means all layers."""
        if layers is None:
            return list(range(self.n_layers))
        return sorted({self._check_layer(layer) for layer in layers})

    @contextmanager
    def patch(self, fn: LayerFn, layers: Iterable[int] | None = None) -> Iterator[None]:
        """Replace each hooked layer's down-proj input x (B, T, d_ff) with fn(layer, x)."""
        handles = []

        def make_hook(layer: int) -> Callable[[nn.Module, tuple], tuple]:
            """Pre-hook bound to one layer index."""
            return lambda _mod, args: (fn(layer, args[0]), *args[1:])

        try:
            for layer in self._layer_list(layers):
                handles.append(self._down[layer].register_forward_pre_hook(make_hook(layer)))
            yield
        finally:  # hooks must never outlive the block, also on exceptions
            for handle in handles:
                handle.remove()

    @contextmanager
    def capture(
        self, layers: Iterable[int] | None = None, detach: bool = True
    ) -> Iterator[dict[int, Tensor]]:
        """Yield a dict filled with each layer's down-proj input (B, T, d_ff) on forward.

        With detach=False and grad mode on, the stored tensors stay in the autograd graph;
        if an input does not require grad (e.g. frozen parameters) it is replaced by an
        equal-valued leaf that does, so `torch.autograd.grad` w.r.t. every captured
        tensor works. Only the first such layer becomes a leaf: later layers depend on
        it and so keep the full downstream graph.
        """
        store: dict[int, Tensor] = {}

        def record(layer: int, x: Tensor) -> Tensor:
            """Store x (detached or differentiable) and pass it on."""
            if detach:
                store[layer] = x.detach()
                return x
            if torch.is_grad_enabled() and not x.requires_grad:
                x = x.detach().requires_grad_(True)
            store[layer] = x
            return x

        with self.patch(record, layers):
            yield store

    @contextmanager
    def scale_neurons(self, scales: dict[int, tuple[Tensor, Tensor]]) -> Iterator[None]:
        """Multiply activations of given neurons: {layer: (neurons (k,), factors (k,) or scalar)}."""
        multipliers: dict[int, Tensor] = {}
        for layer, (neurons, factors) in scales.items():
            idx = self._check_neurons(neurons)
            factors = torch.as_tensor(factors, dtype=torch.float32).flatten()
            if factors.numel() not in (1, idx.numel()):
                raise ValueError(
                    f"layer {layer}: {factors.numel()} factors for {idx.numel()} neurons; "
                    "allowed: one factor or one per neuron"
                )
            vec = torch.ones(self.d_ff)  # (d_ff,)
            vec[idx] = factors.expand(idx.shape)
            multipliers[self._check_layer(layer)] = vec

        def apply(layer: int, x: Tensor) -> Tensor:
            """Scale x (B, T, d_ff) by the layer's multiplier vector."""
            return x * multipliers[layer].to(device=x.device, dtype=x.dtype)

        with self.patch(apply, multipliers.keys()):
            yield
