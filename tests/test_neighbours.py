"""NeuMuter's neighbours: a masked LM rewrites a seeded share of each text's wordpieces, one at a time."""
from __future__ import annotations

import random

import pytest
import torch

from lib.data import neighbours as nb
from lib.families.causal import pad
from tests.tiny_models import save_tiny_bert_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["please call me at 8953119697 tomorrow morning", "the account manager is aimee klein",
         "we sold gas at transco zone six for april"]


@pytest.fixture(scope="module")
def mlm_tok(tmp_path_factory):
    """A tiny random BERT MLM with MiniLM's tokenizer, loaded from a saved checkpoint."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = save_tiny_bert_checkpoint(tmp_path_factory.mktemp("bert"))
    return AutoModelForMaskedLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def final_ids(monkeypatch, mlm, tok, texts, ratio: float, seed: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Run `rewrite` and capture its final padded id tensor (edited in place by `_step`) and the input rows."""
    seen = []
    real = nb._step

    def spy(mlm_, ids, *rest):
        seen.append(ids)
        real(mlm_, ids, *rest)

    monkeypatch.setattr(nb, "_step", spy)
    nb.rewrite(mlm, tok, texts, ratio, seed)
    rows = [[tok.cls_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.sep_token_id] for t in texts]
    assert all(ids is seen[0] for ids in seen)  # one tensor, edited in place
    return seen[0], rows


def test_ratio_one_changes_every_wordpiece(monkeypatch, mlm_tok) -> None:
    mlm, tok = mlm_tok
    out, rows = final_ids(monkeypatch, mlm, tok, TEXTS, 1.0, seed=0)
    original, _ = pad(rows, tok.pad_token_id)
    special = set(tok.all_special_ids)
    for r, row in enumerate(rows):
        n = len(row) - 2
        assert (out[r, 1 : n + 1] != original[r, 1 : n + 1]).all(), r
        assert not special & set(out[r, 1 : n + 1].tolist())  # never a special token
        assert out[r, 0] == tok.cls_token_id and out[r, n + 1] == tok.sep_token_id
        assert (out[r, n + 2 :] == tok.pad_token_id).all()  # padding untouched


def test_ratio_half_changes_exactly_round_half(monkeypatch, mlm_tok) -> None:
    mlm, tok = mlm_tok
    out, rows = final_ids(monkeypatch, mlm, tok, TEXTS, 0.5, seed=1)
    original, _ = pad(rows, tok.pad_token_id)
    for r, row in enumerate(rows):
        n = len(row) - 2
        changed = int((out[r] != original[r]).sum())
        assert changed == round(0.5 * n), (r, n, changed)


def test_rewrite_returns_decoded_text_and_is_seeded(mlm_tok) -> None:
    mlm, tok = mlm_tok
    first = nb.rewrite(mlm, tok, TEXTS, 1.0, seed=5)
    assert len(first) == len(TEXTS) and all(isinstance(t, str) and t for t in first)
    assert first == nb.rewrite(mlm, tok, TEXTS, 1.0, seed=5)
    assert [t.lower() for t in first] != [t.lower() for t in TEXTS]
    half = nb.rewrite(mlm, tok, TEXTS, 0.3, seed=5)
    assert half == nb.rewrite(mlm, tok, TEXTS, 0.3, seed=5)
    assert half != nb.rewrite(mlm, tok, TEXTS, 0.3, seed=6)


def test_plan_draws_distinct_positions_after_cls() -> None:
    plans = nb._plan([10, 7, 1, 3], 0.5, random.Random(0))
    assert [len(p) for p in plans] == [5, 4, 1, 2]  # round(3.5) == 4, at least one, round(1.5) == 2
    for plan, n in zip(plans, [10, 7, 1, 3]):
        assert len(set(plan)) == len(plan) and set(plan) <= set(range(1, n + 1))
    full = nb._plan([6], 1.0, random.Random(0))[0]
    assert sorted(full) == [1, 2, 3, 4, 5, 6] and full != [1, 2, 3, 4, 5, 6]  # random visiting order
    assert nb._plan([9, 4], 0.4, random.Random(2)) == nb._plan([9, 4], 0.4, random.Random(2))


def test_step_rewrites_only_the_targets(mlm_tok) -> None:
    mlm, tok = mlm_tok
    rows = [[tok.cls_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.sep_token_id] for t in TEXTS[:2]]
    ids, attn = pad(rows, tok.pad_token_id)
    before = ids.clone()
    banned = torch.tensor(sorted(set(tok.all_special_ids)))
    nb._step(mlm, ids, attn, [(0, 2), (1, 4)], tok.mask_token_id, banned)
    diff = (ids != before).nonzero().tolist()
    assert diff == [[0, 2], [1, 4]]
    assert not set(tok.all_special_ids) & {int(ids[0, 2]), int(ids[1, 4])}


def test_neighbours_groups_k_per_text_in_order(mlm_tok) -> None:
    mlm, tok = mlm_tok
    out = nb.neighbours(mlm, tok, TEXTS[:2], k=3, ratio=0.5, seed=10)
    draws = [nb.rewrite(mlm, tok, TEXTS[:2], 0.5, 10 + i) for i in range(3)]
    assert out == [draws[0][0], draws[1][0], draws[2][0], draws[0][1], draws[1][1], draws[2][1]]


@pytest.mark.parametrize("ratio", [0.0, -0.2, 1.01])
def test_bad_ratio(mlm_tok, ratio: float) -> None:
    mlm, tok = mlm_tok
    with pytest.raises(ValueError, match=f"ratio={ratio}"):
        nb.rewrite(mlm, tok, TEXTS, ratio, seed=0)
    with pytest.raises(ValueError, match=f"ratio={ratio}"):
        nb.neighbours(mlm, tok, TEXTS, 1, ratio, seed=0)


@pytest.mark.parametrize("k", [0, -1])
def test_bad_k(mlm_tok, k: int) -> None:
    mlm, tok = mlm_tok
    with pytest.raises(ValueError, match=f"k={k}"):
        nb.neighbours(mlm, tok, TEXTS, k, 0.5, seed=0)


def test_text_without_wordpieces(mlm_tok) -> None:
    mlm, tok = mlm_tok
    with pytest.raises(ValueError, match="no wordpieces"):
        nb.rewrite(mlm, tok, ["fine text", "   "], 1.0, seed=0)


def test_config_rejects_what_rewrite_and_neighbours_reject() -> None:
    assert nb.NeighbourConfig().k >= 1 and 0 < nb.NeighbourConfig().ratio <= 1
    with pytest.raises(ValueError, match="k=0"):
        nb.NeighbourConfig(k=0)
    with pytest.raises(ValueError, match="ratio=1.5"):
        nb.NeighbourConfig(ratio=1.5)
