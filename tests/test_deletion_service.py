"""A deletion request end to end on a tiny causal LM: verify (a never-memorized item needs nothing), forget with a
neuron method through the method contract, audit earlier requests, commit digests only; a second request
audits the first; rollback takes its items out of the audit; the ledger and the store verify."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lib.data.records import Candidate
from lib.deletion import service
from lib.deletion.patch import model_digest
from lib.deletion.service import Policy, submit
from lib.deletion.store import Store, rollback
from lib.families.causal import CausalFamily, Sequences, of
from lib.methods import make_config
from tests.tiny_models import memorise_ffn, tiny_llama

FAMILY = CausalFamily(SimpleNamespace(pad_token_id=0), batch_size=4)  # tiny model: token ids as text, pad id 0
ROWS = [[11, 17, 42, 88, 23, 5, 61, 30, 77, 2], [64, 54, 9, 33, 71, 12, 95, 48, 2], [37, 81, 26, 58, 14, 99, 45, 2],
        [21, 66, 3, 90, 52, 19, 8, 2], [73, 28, 84, 47, 6, 35, 2]]
SPANS = [(4, 8), (3, 7), (2, 6), (3, 6), (2, 5)]
NEVER_SEEN = [50, 60, 70, 80, 85, 86, 2]
CONFIGS = {"ig": {"n_start": 8, "targets": "span"}}


def item(i: int, row: list[int], span: tuple[int, int], category: str) -> Candidate:
    """A request item whose text is the token ids, its secret the span's ids."""
    return Candidate(f"item-{i}", " ".join(map(str, row)), " ".join(map(str, row[span[0]:span[1]])), category, 1)


def encode(items) -> Sequences:
    """Token ids from the text; the span where the secret's ids sit."""
    ids = [list(map(int, it.text.split())) for it in items]
    spans = []
    for row, it in zip(ids, items):
        secret = list(map(int, it.secret.split()))
        start = next(s for s in range(len(row)) if row[s:s + len(secret)] == secret)
        spans.append((start, start + len(secret)))
    return of(ids, spans)


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    torch.manual_seed(0)
    return memorise_ffn(tiny_llama(seed=0), of(ROWS, SPANS)).eval()


def test_requests_verify_forget_audit_and_commit(tmp_path: Path, base: torch.nn.Module) -> None:
    torch.set_num_threads(1)
    store = Store(tmp_path / "store", model_digest(base))
    load = lambda: copy.deepcopy(base)  # noqa: E731
    retain, utility = of([[5, 6, 7, 8, 9, 2]]), of([[40, 41, 43, 44, 45, 2], [12, 13, 14, 15, 2]])
    common = dict(family=FAMILY, encode=encode, retain=retain, utility=utility, policy=Policy("ig"),
                  configs=lambda name: make_config(name, CONFIGS[name]), threshold=0.3)
    first_items = [item(0, ROWS[0], SPANS[0], "TEL"), Candidate("item-x", " ".join(map(str, NEVER_SEEN)), "70 80",
                                                               "TEL", 1)]
    first = submit(store, load, items=first_items, request="req-1", when="t1", **common)
    assert (first.seq, first.items, first.memorized, first.forgotten, first.audited) == (0, 2, 1, 1, 0)
    assert first.methods == {"TEL": "ig"} and first.utility_after != first.utility_before
    # the tiny model's memories share neurons: the first edit took part of item 2's too, not all of it
    second = submit(store, load, items=[item(2, ROWS[2], SPANS[2], "NAME")], request="req-2", when="t2", **common)
    assert (second.seq, second.memorized, second.forgotten, second.audited) == (1, 1, 1, 1)
    assert second.methods == {"NAME": "ig"} and 0 <= second.resurfaced <= 1
    ledger_text = store.ledger.read_text()
    assert all(it.text not in ledger_text and it.secret not in ledger_text for it in first_items)
    entries = store.entries()
    assert entries[0]["audit"]["memorized"] == 1 and entries[0]["method"] == "ig"
    assert entries[0]["content_digest"] == service.content_digest(first_items)
    assert store.verify(load) == []
    assert [it.id for it in service.in_force(store)] == ["item-0", "item-2"]
    with store.locked():
        rollback(store, store.replay(load()), {"request": "undo-2", "content_digest": "0" * 64, "time": "t3"})
    assert [it.id for it in service.in_force(store)] == ["item-0"]
    assert model_digest(store.replay(load())) == entries[0]["child"]
    with store.locked():  # undoing the rollback re-applies request 2: its item is in force again
        redo = rollback(store, store.replay(load()), {"request": "redo", "content_digest": "0" * 64, "time": "t"})
    assert redo["child"] == entries[1]["child"] and len(service.in_force(store)) == 2
    with store.locked():
        rollback(store, store.replay(load()), {"request": "undo-again", "content_digest": "0" * 64, "time": "t"})
    assert [it.id for it in service.in_force(store)] == ["item-0"]
    nothing = submit(store, load, items=[Candidate("item-y", " ".join(map(str, NEVER_SEEN)), "70 80", "TEL", 1)],
                     request="req-4", when="t4", **common)
    assert (nothing.memorized, nothing.forgotten, nothing.methods) == (0, 0, {})
    assert store.entries()[-1]["method"] == "none" and store.entries()[-1]["parent"] == store.entries()[-1]["child"]
    assert store.verify(load) == [] and service.forget_private(store) == 3  # seq 0, 1 and the empty seq 5


def test_a_method_that_needs_cached_statistics_is_refused(tmp_path: Path, base: torch.nn.Module) -> None:
    store = Store(tmp_path / "s", model_digest(base))
    with pytest.raises(ValueError, match="method snku needs"):
        submit(store, lambda: copy.deepcopy(base), FAMILY, encode, [item(0, ROWS[0], SPANS[0], "TEL")], None,
               of([[1, 2, 3]]), Policy("snku"), lambda n: None, 0.5, "r", "t")


def track_row(method: str, forgotten: float, ppl: float, original_ppl: float = 10.0) -> dict:
    """The part of a causal_evaluate metrics file that rank_methods reads."""
    return {"models": {method: {"forgotten_frac": forgotten, "ppl_valid": ppl}, "original": {"ppl_valid": original_ppl}}}


def test_auto_ranks_methods_that_met_the_target_by_utility_loss() -> None:
    """Methods that forgot everything come first, least perplexity increase first; then the rest by share
    forgotten; methods a request cannot run (NeuMuter needs neighbours) are left out."""
    results = {"ga": track_row("ga", 1.0, 60.0), "npo": track_row("npo", 1.0, 12.0),
               "ig": track_row("ig", 0.5, 10.5), "ta": track_row("ta", 0.75, 40.0),
               "neumuter": track_row("neumuter", 1.0, 10.1)}
    assert service.rank_methods(results) == ["npo", "ga", "ta", "ig"]
    assert service.rank_methods({}) == list(service.FALLBACK_RANKING)


def test_auto_policy_resolves_to_the_first_ranked_method() -> None:
    """`auto` anywhere in the policy becomes the ranking's first method; named methods stay."""
    policy = Policy("auto", {"TEL": "ga", "NAME": "auto"}).resolved(["npo", "ig"])
    assert (policy.method, dict(policy.by_category)) == ("npo", {"TEL": "ga", "NAME": "npo"})
    assert Policy("ig").resolved([]) == Policy("ig")
    with pytest.raises(ValueError, match="auto"):
        Policy("auto").resolved([])


def test_params_check_allows_auto_and_names_a_method_that_cannot_serve() -> None:
    """`requests.method: auto` is valid; NeuMuter (it needs neighbours) is refused by key, the allowed listed."""
    from flows.check import check_requests
    from lib.core.params import ParamsError
    from lib.deletion.service import RequestsConfig

    check_requests(RequestsConfig(method="auto", by_category={"TEL": "npo"}))
    with pytest.raises(ParamsError, match=r"requests\.by_category\.TEL = 'neumuter'.*allowed: auto, .*\big\b"):
        check_requests(RequestsConfig(method="auto", by_category={"TEL": "neumuter"}))
