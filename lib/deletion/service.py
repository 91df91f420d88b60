"""One deletion request, end to end: verify -> forget -> audit -> commit to the store's ledger.

1. Verify: the current version's memorization of each item (the family's probe: teacher-forced argmax
   accuracy over the item's private span) against the threshold the pipeline set with held-out controls;
   an item the model never memorized needs no edit and is reported as such.
2. Forget: the policy's method per category, through the method contract (`lib.methods.unlearn`), with the
   retain set and the threshold as its stop rule; the request's edit is the difference to the version it
   started from (a neuron patch when every method used is neuron-level, else a weight delta).
3. Audit: the request's items again, every item forgotten by earlier requests still in force (does any
   resurface?), and utility (perplexity on the utility texts) before and after.
4. Commit: the patch, a ledger entry of digests and numbers (never the items' text), then the head.

The items' text is kept, for later audits only, in `<store>/private/<seq>.jsonl` beside the store (like the
pipeline's data/: never in the ledger, logs, Prefect or MLflow); `forget_private` deletes it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from lib.core.editing import diff_edit, snapshot
from lib.core.io import read_jsonl, write_jsonl
from lib.core.params import Count, NonEmpty, check_ranges
from lib.data.records import Candidate
from lib.deletion.patch import model_digest
from lib.deletion.store import Store
from lib.methods import Family, Inputs, get, unlearn

Encode = Callable[[Sequence[Candidate]], Any]  # items -> the family's samples (Sequences for causal LMs)


@dataclass(frozen=True)
class RequestsConfig:
    """The `requests` params section: where the default model's store lives and how requests are forgotten."""

    root: NonEmpty = "data/requests"  # the store (ignored by git: it keeps the forgotten items' text for audits)
    method: NonEmpty = "ig"  # the policy: a method that needs only the forget and retain sets, or auto ...
    by_category: dict[str, NonEmpty] = field(default_factory=dict)  # ... or another one (or auto) per category
    retain_samples: Count = 16  # D_r: background training texts (no secret)
    utility_texts: Count = 32  # held-out texts whose perplexity is the utility audit
    registered_model: NonEmpty = "unlearning-default"  # the MLflow Model Registry name of the versions

    def __post_init__(self) -> None:
        """Every field within its range."""
        check_ranges(self)

    def policy(self) -> "Policy":
        """The method policy this section sets."""
        return Policy(self.method, dict(self.by_category))


AUTO = "auto"  # the policy's name for "the best method the track's results rank" (rank_methods)
FALLBACK_RANKING = ("ig", "npo", "ga")  # before any track result: neuron-level first, then the strongest baseline


@dataclass(frozen=True)
class Policy:
    """Which method forgets which category: `method`, unless `by_category` names another."""

    method: str
    by_category: Mapping[str, str] = field(default_factory=dict)

    def method_for(self, category: str | None) -> str:
        """The method for items of `category`."""
        return self.by_category.get(category or "", self.method)

    def resolved(self, ranking: Sequence[str]) -> "Policy":
        """The policy with `auto` replaced by the first method of `ranking`."""
        if AUTO not in {self.method, *self.by_category.values()}:
            return self
        if not ranking:
            raise ValueError("requests.method auto needs a ranking of methods; none can run a request")
        pick = lambda name: ranking[0] if name == AUTO else name  # noqa: E731
        return Policy(pick(self.method), {c: pick(m) for c, m in self.by_category.items()})


def requestable(name: str, family: str) -> bool:
    """Whether a request can run method `name` on `family`: it needs only the forget and retain sets."""
    method = get(name)
    return set(method.needs) <= {"forget", "retain"} and family in method.families


def rank_methods(results: Mapping[str, Mapping[str, Any]], family: str = "causal") -> list[str]:
    """Methods a request can run, best first, from a track's per-method results (metrics/causal/<method>.json):
    those that met the forget target (every forget item below the thresholds) by least utility loss (held-out
    perplexity over the original model's), then the rest by the share they forgot; FALLBACK_RANKING without
    results."""
    rows = []
    for name, row in results.items():
        if not requestable(name, family):
            continue
        models = row["models"]
        forgotten = float(models[name]["forgotten_frac"])
        loss = float(models[name]["ppl_valid"]) / float(models["original"]["ppl_valid"])
        rows.append((0 if forgotten >= 1.0 else 1, loss if forgotten >= 1.0 else -forgotten, name))
    return [name for *_, name in sorted(rows)] or [m for m in FALLBACK_RANKING if requestable(m, family)]


@dataclass(frozen=True)
class Receipt:
    """What a request did, in numbers and ids (what the requester and the ledger get)."""

    request: str
    seq: int
    items: int
    memorized: int  # items the current version had memorized (the others needed nothing)
    forgotten: int  # memorized items below the threshold after the edit
    resurfaced: int  # items of earlier requests above the threshold again
    audited: int  # items of earlier requests re-checked
    methods: dict[str, str]  # category -> method used
    utility_before: float
    utility_after: float
    child: str  # the new version's model digest


def content_digest(items: Sequence[Candidate]) -> str:
    """SHA-256 of the items' ids, text, secret and category: names the content without holding it."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(repr((item.id, item.text, item.secret, item.category)).encode())
    return digest.hexdigest()


def perplexity(model: nn.Module, family: Family, samples: Any, batch_size: int) -> float:
    """exp(mean NLL per scored token) of the samples, through the family."""
    n = len(samples.ids)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            index = list(range(start, min(n, start + batch_size)))
            total += float(family.nll_sum(model, samples, index))
            count += family.count(samples, index)
    return math.exp(total / max(count, 1))


def _private(store: Store, seq: int) -> list[Candidate]:
    """The items a committed request forgot (for audits)."""
    path = store.root / "private" / f"{seq}.jsonl"
    return [Candidate(**row) for row in read_jsonl(path)] if path.is_file() else []


def in_force(store: Store) -> list[Candidate]:
    """Items forgotten by committed requests whose edit is still applied (a rollback of a rollback re-applies)."""
    entries = {e["seq"]: e for e in store.entries()}
    active: dict[int, bool] = {}

    def undo(seq: int, applied: bool) -> None:
        """Set a request's state; undoing a rollback sets the opposite state of what it undid."""
        if entries[seq]["method"] == "rollback":
            undo(entries[seq]["params"]["undoes"], not applied)
        else:
            active[seq] = applied

    for seq, entry in entries.items():
        if entry["method"] == "rollback":
            undo(entry["params"]["undoes"], False)
        else:
            active[seq] = True
    return [item for seq, on in sorted(active.items()) if on for item in _private(store, seq)]


def forget_private(store: Store) -> int:
    """Delete the kept item texts; returns how many files were removed (audits then have nothing to re-check)."""
    files = list((store.root / "private").glob("*.jsonl"))
    for path in files:
        path.unlink()
    return len(files)


def submit(store: Store, load_base: Callable[[], nn.Module], family: Family, encode: Encode,
           items: Sequence[Candidate], retain: Any, utility: Any, policy: Policy,
           configs: Callable[[str], Any], threshold: float, request: str, when: str) -> Receipt:
    """Apply one request to the store's current version under its lock; see the module docstring."""
    if not items:
        raise ValueError(f"request {request} holds no items")
    for name in {policy.method, *policy.by_category.values()}:
        if not set(get(name).needs) <= {"forget", "retain"}:
            raise ValueError(f"method {name} needs {list(get(name).needs)}; a request can run methods that need "
                             "only the forget and retain sets")
    with store.locked():
        model = store.replay(load_base()).eval()
        start, before = model_digest(model), snapshot(model)
        samples = encode(items)
        ma = family.memorization(model, samples)
        memorized = [i for i in range(len(items)) if float(ma[i]) > threshold]
        utility_before = perplexity(model, family, utility, family.batch_size)
        methods: dict[str, str] = {}
        for category in sorted({items[i].category or "" for i in memorized}):
            index = [i for i in memorized if (items[i].category or "") == category]
            name = methods[category] = policy.method_for(category)
            inputs = Inputs(family=family, forget=samples.subset(index), retain=retain, stop=threshold)
            unlearn(name, model, inputs, configs(name))
        kind = "neurons" if all(get(m).kind == "neurons" for m in methods.values()) else "weights"
        edit, changed, _ = diff_edit(before, model, kind)
        after = family.memorization(model, samples)
        earlier = in_force(store)
        resurfaced = int((family.memorization(model, encode(earlier)) > threshold).sum()) if earlier else 0
        forgotten = sum(float(after[i]) <= threshold for i in memorized)
        utility_after = perplexity(model, family, utility, family.batch_size)
        audit = {"items": len(items), "memorized": len(memorized), "forgotten": forgotten,
                 "resurfaced": resurfaced, "audited": len(earlier), "changed_weights": changed}
        # the items' text for later audits, written before the head moves (a kill before it: dropped on recovery)
        write_jsonl(store.root / "private" / f"{store.head().seq + 1}.jsonl", (asdict(items[i]) for i in memorized))
        entry = store.commit(start, edit, model_digest(model), {
            "request": request, "content_digest": content_digest(items), "time": when,
            "method": "+".join(sorted(set(methods.values()))) or "none",
            "params": {m: _plain(configs(m)) for m in sorted(set(methods.values()))},
            "metrics_before": {"utility_ppl": utility_before, "forget_ma": _mean(ma, memorized)},
            "metrics_after": {"utility_ppl": utility_after, "forget_ma": _mean(after, memorized)},
            "audit": audit})
    return Receipt(request, entry["seq"], len(items), len(memorized), forgotten, resurfaced, len(earlier),
                   methods, utility_before, utility_after, entry["child"])


def _mean(values: torch.Tensor, index: list[int]) -> float | None:
    """Mean of values at index (None when empty)."""
    return float(values[index].mean()) if index else None


def _plain(cfg: Any) -> dict[str, Any]:
    """A method config as plain JSON values."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
