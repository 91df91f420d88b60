"""Membership-inference scores: their arithmetic on hand-made statistics, and on a tiny causal LM that memorised
half of its texts each score tells members from non-members, while the unedited model does not leak."""
from __future__ import annotations

import pytest
import torch

from lib.attacks import mia
from lib.attacks.mia import TokenStats
from lib.families.causal import of
from tests.tiny_models import memorise_ffn, tiny_llama


def test_scores_on_hand_made_statistics() -> None:
    stats = TokenStats(torch.tensor([-1.0, -2.0, -3.0, -4.0]), torch.tensor([-2.0] * 4), torch.tensor([0.5] * 4))
    assert mia.score(stats, "x", "loss") == pytest.approx(-2.5)
    assert mia.score(stats, "x", "min_k", k=0.5) == pytest.approx(-3.5)
    assert mia.score(stats, "x", "min_k_pp", k=0.25) == pytest.approx(-4.0)  # (-4 - -2) / 0.5
    text = "abc abc abc abc"
    assert mia.score(stats, text, "zlib") < 0
    with pytest.raises(ValueError, match="unknown; allowed: loss, zlib, min_k, min_k_pp"):
        mia.score(stats, "x", "ppl")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        mia.score(TokenStats(torch.zeros(0), torch.zeros(0), torch.ones(0)), "x", "loss")
    assert mia.auc([3.0, 4.0], [1.0, 2.0]) == 1.0 and mia.auc([1.0], [2.0]) == 0.0
    assert mia.priv_leak(0.75, 0.5) == pytest.approx(0.5) and mia.priv_leak(0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="both sides"):
        mia.auc([], [1.0])


def test_every_score_finds_the_memorised_texts_of_a_tiny_model() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    rows = torch.randint(3, 90, (12, 10), generator=generator).tolist()
    members = of(rows[:6])  # the other 6 rows are the non-members
    original = tiny_llama(seed=0).eval()
    model = memorise_ffn(tiny_llama(seed=0), members).eval()
    texts = [" ".join(map(str, r)) for r in rows]
    aucs = {}
    for name, m in (("memorised", model), ("original", original)):
        stats = mia.token_stats(m, of(rows), pad_id=0, batch_size=5)
        assert len(stats) == 12 and all(s.logp.numel() == 9 and s.logp.dtype == torch.float32 for s in stats)
        assert all(bool((s.sigma > 0).all()) and bool((s.logp <= 0).all()) for s in stats)
        for kind in mia.SCORES:
            scores = [mia.score(s, t, kind) for s, t in zip(stats, texts)]
            aucs[name, kind] = mia.auc(scores[:6], scores[6:])
        aucs[name, "stats"] = stats
    for kind in mia.SCORES:
        assert aucs["memorised", kind] >= 0.9, (kind, aucs["memorised", kind])
    reference = mia.reference_scores(aucs["memorised", "stats"], aucs["original", "stats"])
    assert mia.auc(reference[:6], reference[6:]) >= 0.9
    # the unedited model saw neither set: its LOSS AUC is far from the memorised model's
    assert aucs["original", "loss"] < 0.9
    assert mia.priv_leak(aucs["memorised", "loss"], aucs["original", "loss"]) > 0.1


def test_statistics_survive_a_safetensors_file(tmp_path) -> None:
    """pack / unpack (the retrained reference's statistics, kept in .cache/store for every attack stage): the same
    tensors back, side by side, a side of no texts included."""
    from lib.core.io import load_tensors, save_tensors

    gen = torch.Generator().manual_seed(0)
    sides = [[TokenStats(*torch.randn(3, n, generator=gen)) for n in (4, 1, 7)], [TokenStats(*torch.randn(3, 2))], []]
    save_tensors(tmp_path / "s.safetensors", mia.pack(sides))
    back = mia.unpack(load_tensors(tmp_path / "s.safetensors"))
    assert [len(side) for side in back] == [3, 1, 0]
    for side, got in zip(sides, back):
        for a, b in zip(side, got, strict=True):
            assert torch.equal(a.logp, b.logp) and torch.equal(a.mu, b.mu) and torch.equal(a.sigma, b.sigma)
