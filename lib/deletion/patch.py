"""An edit as a file: a method's edit (lib.core.editing.Edit) stored as a small safetensors patch.

A neuron-level edit keeps, per layer, the chosen neurons' indices and their old and new output-weight
columns (and the down-projection bias where it changed); a weight-space edit keeps the old and new values
of every parameter tensor it changed. Old and new values are stored (never new - old, whose float sum does
not give `new` back bit for bit), so applying a patch gives the edited model exactly and rollback gives the
parent exactly. Both directions first check that the model holds the values the patch starts from, so a
patch is never applied to the wrong parent.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from lib.core.editing import Edit, LayerPatch, NeuronPatch, WeightDelta, apply_edit
from lib.core.io import InputError, check_safetensors, file_digest, save_tensors, tensors_digest
from safetensors import safe_open

FORMAT = "unlearn-patch/1"


def model_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's name, dtype, shape and bytes (tied weights once): a model version's id."""
    return tensors_digest({name: p.detach() for name, p in model.named_parameters()})


def _tensors(edit: Edit) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The patch's tensors by storage name, and its metadata."""
    if isinstance(edit, WeightDelta):
        names = sorted(edit.old)
        tensors = {**{f"old/{i}": edit.old[n] for i, n in enumerate(names)},
                   **{f"new/{i}": edit.new[n] for i, n in enumerate(names)}}
        return tensors, {"kind": "weights", "names": json.dumps(names)}
    tensors: dict[str, Tensor] = {}
    for p in edit.layers:
        tensors.update({f"{p.layer}/neurons": p.neurons, f"{p.layer}/old": p.old, f"{p.layer}/new": p.new})
        if p.old_bias is not None:
            tensors.update({f"{p.layer}/old_bias": p.old_bias, f"{p.layer}/new_bias": p.new_bias})
    return tensors, {"kind": "neurons", "layers": json.dumps([p.layer for p in edit.layers]),
                     "biases_added": json.dumps(edit.biases_added)}


def save_patch(path: str | Path, edit: Edit, parent: str, child: str) -> str:
    """Write the edit as a safetensors patch from model digest `parent` to `child`; returns the file's digest."""
    tensors, meta = _tensors(edit)
    save_tensors(path, {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                 {**meta, "format": FORMAT, "parent": parent, "child": child})
    return file_digest(path)


def _meta(handle, path: Path) -> dict[str, str]:
    """The patch's metadata, checked to be this format's."""
    meta = handle.metadata() or {}
    if meta.get("format") != FORMAT or meta.get("kind") not in ("neurons", "weights"):
        raise InputError(f"{path} is not an unlearning patch; allowed: a file written by save_patch ({FORMAT})")
    return meta


def load_patch(path: str | Path) -> tuple[Edit, dict[str, str]]:
    """The edit and metadata (parent, child digests) of a patch file; InputError when it is not one."""
    path = check_safetensors(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = _meta(handle, path)
        get = handle.get_tensor
        keys = set(handle.keys())
        if meta["kind"] == "weights":
            names = json.loads(meta["names"])
            edit: Edit = WeightDelta({n: get(f"old/{i}") for i, n in enumerate(names)},
                                     {n: get(f"new/{i}") for i, n in enumerate(names)})
        else:
            layers = []
            for layer in json.loads(meta["layers"]):
                bias = f"{layer}/old_bias" in keys
                layers.append(LayerPatch(layer, get(f"{layer}/neurons"), get(f"{layer}/old"), get(f"{layer}/new"),
                                         get(f"{layer}/old_bias") if bias else None,
                                         get(f"{layer}/new_bias") if bias else None))
            edit = NeuronPatch(tuple(layers), biases_added=json.loads(meta.get("biases_added", "false")) is True)
    return edit, meta


def _holds(model: nn.Module, edit: Edit, which: str) -> bool:
    """Whether the model's parameters equal the edit's `which` ('old' or 'new') values, bit for bit."""
    params = dict(model.named_parameters())
    if isinstance(edit, WeightDelta):
        values = edit.old if which == "old" else edit.new
        return all(n in params and torch.equal(params[n].detach().cpu(), v) for n, v in values.items())
    from lib.core.adapter import FFNAdapter

    adapter = FFNAdapter.for_model(model)
    for p in edit.layers:
        if not torch.equal(adapter.get_columns(p.layer, p.neurons).cpu(), p.old if which == "old" else p.new):
            return False
        bias, held = p.old_bias if which == "old" else p.new_bias, adapter.down_proj_bias(p.layer)
        if held is None and bias is not None:  # a model without FFN biases holds only the zeros a patch gave it
            if not (which == "old" and edit.biases_added and not bool(bias.any())):
                return False
        elif bias is not None and not torch.equal(held.detach().cpu(), bias):
            return False
    return True


def apply_patch(model: nn.Module, edit: Edit, rollback: bool = False) -> None:
    """Apply the edit (or undo it) in place; ValueError, model untouched, when the model is not its start."""
    start = "new" if rollback else "old"
    if not _holds(model, edit, start):
        raise ValueError(f"the model does not hold the patch's {start} values: "
                         f"{'rollback' if rollback else 'apply'} needs the model the patch was made "
                         f"{'into' if rollback else 'from'}")
    apply_edit(model, edit, revert=rollback)
