"""Every unlearning method behind one contract, for masked and causal LMs alike.

A method is one module `lib/methods/<name>.py` with
- `Config`: a frozen dataclass, the only schema of the method's params.yaml section and the only place
  its defaults live (params.yaml sets values; a key it leaves out takes the Config's default);
- `families`: the model families it runs on ("masked", "causal");
- `needs`: the `Inputs` / `Stats` fields it reads (they key its cached experiment runs);
- `kind`: "neurons" when it may change only FFN neurons' output weights (down-projection columns and
  biases), "weights" otherwise;
- `run(model, inputs, cfg) -> Report`: unlearn `inputs.forget` from `model`, in place.
The module's name is its key everywhere: the params key (`methods.<name>`, `causal.methods.<name>`,
`benchmarks.methods.<name>`), the DVC foreach item and the MLflow `method` tag. `unlearn` runs a method and
returns, beside its report, the edit that maps the input model to the result bit for bit (a NeuronPatch for
neuron methods, which proves they changed nothing else, or a WeightDelta).

The registry `METHODS` (key -> the label every report prints) is found, not kept: every module of this package
that defines `label` and `run` is a method. Adding a method is adding its file (and its params.yaml sections);
no shared file changes, so no other stage's code deps change and nothing else reruns.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from torch import Tensor, nn

from lib.core.editing import Edit, diff_edit, snapshot

FAMILIES = ("masked", "causal")
KINDS = ("neurons", "weights")
BY_CATEGORY = "by_category"  # a method section's per-category overrides (masked track: TEL, NAME, RANDOM)


class Family(Protocol):
    """What differs between masked and causal LMs, as every method sees it (lib/families/<name>.py)."""

    name: str  # "masked" | "causal"
    tokenizer: Any
    pad_id: int
    batch_size: int  # samples per forward pass

    def nll_sum(self, model: nn.Module, samples: Any, index: Sequence[int]) -> Tensor:
        """Negative log-likelihood of the scored tokens of samples `index`, summed (differentiable)."""

    def sample_nll(self, model: nn.Module, samples: Any, index: Sequence[int]) -> Tensor:
        """Each sample's NLL summed over its scored tokens (B,): minus log P(sample) (differentiable)."""

    def count(self, samples: Any, index: Sequence[int]) -> int:
        """Number of scored tokens of samples `index`."""

    def scored_logits(self, model: nn.Module, samples: Any, index: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Logits (n, V) at every scored token of samples `index`, sample by sample, and the gold ids (n,)."""

    def scored_ids(self, samples: Any) -> list[int]:
        """The gold id of every scored token of every sample, in order (no model needed)."""

    def positions(self, model: nn.Module, samples: Any, index: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Model inputs of samples `index` (ids, mask) and the positions that stand for them (B, T) bool."""

    def memorization(self, model: nn.Module, samples: Any) -> Tensor:
        """Per-sample memorization (N,): share of scored tokens the model predicts (argmax), no gradient."""

    def target_rows(self, samples: Any, which: str = "span") -> Any:
        """One row per scored target token (input ids, mask, scored position, gold id, owner sample)."""


@dataclass(frozen=True)
class Stats:
    """Cached statistics of the forget targets (what the upstream stages computed), on the CPU."""

    attribution: Tensor | None = None  # (L, d_ff) Grad x Act summed over the forget targets (SNKU)
    activations: Tensor | None = None  # (N, L, d_ff) FFN activations at the forget targets (SNKU clustering)
    clusters: dict[int, np.ndarray] | None = None  # layer -> (d_ff,) cluster labels (SNKU)
    ig: Tensor | None = None  # (R, L, d_ff) Integrated Gradients of each forget target row (DEPN, APNEAP)
    ig_owner: Tensor | None = None  # (R,) the forget sample (text) each IG row belongs to
    seconds: dict[str, float] = field(default_factory=dict)  # compute time of each statistic


@dataclass(frozen=True)
class Inputs:
    """What a method may read; it declares the fields it uses in `needs`."""

    family: Family
    forget: Any  # D_f in the family's form (masked: MaskedRows, one per secret token; causal: Sequences)
    retain: Any = None  # D_r, for methods with a retain term
    neighbours: Any = None  # K rewrites per forget sample, grouped by sample (NeuMuter)
    records: tuple = ()  # masked LMs: the SecretRecords behind `forget` (APNEAP's placeholders)
    stats: Stats = Stats()
    stop: float | None = None  # stop once every forget sample's memorization is <= stop; None: fixed strength
    seed: int = 0


@dataclass(frozen=True)
class Report:
    """What a method did: its final strength, whether the stop rule held, its cost and details."""

    strength: float  # steps, neurons, tau, ... (see strength_name)
    strength_name: str
    steps: int  # optimizer steps, or rounds for training-free methods
    trainable: int  # parameters the method could change
    reached: bool | None = None  # the stop rule held at the end (None: no stop rule, fixed strength)
    neurons: tuple[tuple[int, int], ...] = ()  # (layer, neuron) chosen, in rank order (neuron methods)
    selection_seconds: float = 0.0
    edit_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    method: str = ""  # the registry key (filled in by `unlearn`)


@dataclass(frozen=True)
class Outcome:
    """A method's report and the edit it made (input model -> result, bit for bit)."""

    report: Report
    edit: Edit
    changed: int  # scalar parameters that differ from the input model
    total: int  # scalar parameters of the model
    seconds: float  # wall clock of the method's run (the edit's bookkeeping excluded)


@functools.cache
def registry() -> dict[str, str]:
    """key -> report label of every method module in this package (one that defines `label` and `run`)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "label") and hasattr(module, "run"):
            found[info.name] = module.label
    return found


def __getattr__(name: str) -> Any:
    """`METHODS` is the registry, found on first use (PEP 562: method modules import this package first)."""
    if name == "METHODS":
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(name: str) -> ModuleType:
    """The method module called `name`; unknown names list the registered ones."""
    methods = registry()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(methods)}")
    return importlib.import_module(f"{__name__}.{name}")


def make_config(name: str, section: Mapping[str, Any] | None = None, category: str | None = None,
                overrides: Mapping[str, Any] | None = None, where: str | None = None) -> Any:
    """The method's Config from its params section (+ the category's `by_category` values, + overrides)."""
    from lib.core.params import ParamsError, build, check_keys
    from lib.data.records import CATEGORIES

    where = where or f"methods.{name}"
    values = dict(section or {})
    per_category = values.pop(BY_CATEGORY, {}) or {}
    if not isinstance(per_category, Mapping) or not all(isinstance(v, Mapping) for v in per_category.values()):
        raise ParamsError(f"{where}.{BY_CATEGORY} = {per_category!r} is not a mapping of category -> values")
    unknown = sorted(set(per_category) - set(CATEGORIES))
    if unknown:  # a misspelt category would otherwise be ignored silently
        raise ParamsError(f"unknown key {where}.{BY_CATEGORY}.{unknown[0]}; allowed keys: {list(CATEGORIES)}")
    if category is not None:  # the category's own values, checked first so that errors name their key
        own = per_category.get(category, {})
        check_keys(get(name).Config, dict(own), f"{where}.{BY_CATEGORY}.{category}")
        values.update(own)
    values.update(overrides or {})
    return build(get(name).Config, values, where)


STATISTICS = ("attribution", "activations", "clusters", "ig")  # Stats the tracks' stages compute for neuron methods


def check_track(name: str, where: str, family: str) -> None:
    """A track's pipeline (params key `where`) lists a method of its family (every track computes the statistics a
    neuron method reads)."""
    from lib.core.params import ParamsError

    method = get(name)
    if family not in method.families:
        raise ParamsError(f"{where} contains {name!r}, which runs on {', '.join(method.families)} LMs only; "
                          f"this track is {family}")


def check_family(method: ModuleType, family: str) -> None:
    """A method runs only on the families it declares."""
    if family not in method.families:
        raise ValueError(f"method {method.__name__.rsplit('.', 1)[-1]} runs on {', '.join(method.families)} LMs, "
                         f"not {family} LMs")


def unlearn(name: str, model: nn.Module, inputs: Inputs, cfg: Any) -> Outcome:
    """Run method `name` on `model` in place; return its report and the edit it made."""
    method = get(name)
    check_family(method, inputs.family.name)
    before = snapshot(model)
    start = time.perf_counter()
    report = method.run(model, inputs, cfg)
    seconds = time.perf_counter() - start
    if not (report.selection_seconds or report.edit_seconds):  # no phases of its own (GA, NPO, ...): the run is the edit
        report = dataclasses.replace(report, edit_seconds=seconds)
    edit, changed, total = diff_edit(before, model, method.kind)
    return Outcome(dataclasses.replace(report, method=name), edit, changed, total, seconds)
