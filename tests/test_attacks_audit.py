"""lib.attacks.audit: every attack on a tiny LLaMA that memorised its texts, on one that forgot them by gradient
ascent, and on a reference that never saw them: each attack finds what is there, and nothing on the reference."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lib.attacks.audit import AttacksConfig, audit, privacy_leak
from lib.attacks.causal import CausalProbe, span_ma, span_ma_nll
from lib.attacks.relearn import RelearnConfig, relearn
from lib.families.causal import CausalFamily, of, sequence_nll
from tests.test_attacks_relearn import gradient_ascent
from tests.tiny_models import memorise_ffn, tiny_llama

CFG = AttacksConfig(n_samples=8, max_new=4, relearn_steps=(5, 10, 20), relearn_learning_rate=3e-4,
                    relearn_batch_size=4)


@pytest.fixture(scope="module")
def setup() -> tuple[CausalProbe, dict[str, torch.nn.Module]]:
    """The probe, and the memorised, the unlearned and the reference model (D_f: 8 texts, secret = last 4 tokens)."""
    rows = torch.randint(3, 90, (8, 10), generator=torch.Generator().manual_seed(2)).tolist()
    other = torch.randint(3, 90, (8, 10), generator=torch.Generator().manual_seed(5)).tolist()
    forget, holdout = of(rows, [(6, 10)] * 8), of(other, [(6, 10)] * 8)
    texts = ([" ".join(map(str, r)) for r in rows], [" ".join(map(str, r)) for r in other])
    torch.manual_seed(0)
    memorised = memorise_ffn(tiny_llama(seed=0), forget)
    models = {"memorised": memorised, "unlearned": gradient_ascent(memorised, forget, until=5.0),
              "reference": tiny_llama(seed=0).eval()}
    family = CausalFamily(tokenizer=SimpleNamespace(pad_token_id=0))
    paraphrased = of([r[:3] + r[4:] for r in rows], [(5, 9)] * 8)  # one token of each prefix left out
    probe = CausalProbe(forget, holdout, texts, paraphrased, family, CFG)
    return probe, models


@pytest.fixture(scope="module")
def results(setup: tuple[CausalProbe, dict[str, torch.nn.Module]]) -> dict[str, dict[str, Any]]:
    """The audit of each model."""
    probe, models = setup
    reference = probe.membership_stats(models["reference"])
    return {name: audit(model, reference, models["memorised"], probe, CFG) for name, model in models.items()}


def test_every_attack_reports(results: dict[str, dict[str, Any]]) -> None:
    for out in results.values():
        assert set(out) == {"direct", "int8", "int4", "sampling", "logit_lens", "paraphrase", "relearn",
                            "relearn_unrelated", "mia", "attack_seconds"}
        assert set(out["attack_seconds"]) == set(out) - {"attack_seconds"}
        leaks = list(out["sampling"].values())
        assert list(out["sampling"]) == ["leak@1", "leak@2", "leak@4", "leak@8"] and leaks == sorted(leaks)
        assert out["logit_lens"]["best_top1"] >= out["logit_lens"]["final_top1"]
        assert list(out["relearn"]) == list(out["relearn_unrelated"]) == ["0", "5", "10", "20"]
        assert out["relearn_unrelated"]["0"] == out["direct"]  # all of D_f is measured: direct's numbers reused


def test_a_memorised_model_is_caught_by_every_attack(results: dict[str, dict[str, Any]]) -> None:
    out = results["memorised"]
    assert out["direct"]["span_ma"] == 1.0 and out["int8"]["span_ma"] >= 0.9  # 8-bit rounding keeps the memory
    assert out["sampling"]["leak@1"] >= 0.3 and out["sampling"]["leak@8"] >= 0.9
    assert out["logit_lens"]["best_top1"] == 1.0
    assert out["paraphrase"]["n"] == 8.0 and 0.0 <= out["paraphrase"]["span_ma"] <= 1.0
    assert min(out["mia"].values()) >= 0.9
    assert min(privacy_leak(out, results["reference"]).values()) > 0.5


def test_relearning_brings_back_what_gradient_ascent_hid(results: dict[str, dict[str, Any]]) -> None:
    attacked, base = results["unlearned"]["relearn"], results["reference"]["relearn"]
    assert attacked["0"]["nll"] > base["0"]["nll"]  # forgotten: no likelier than for a model that never saw it
    assert attacked["20"]["nll"] < base["0"]["nll"] - 0.3  # until 20 steps on the other half bring it back
    assert all(p["nll"] > base["0"]["nll"] - 0.05 for p in base.values())  # the reference has nothing to recover
    assert results["unlearned"]["int4"]["changed_weights"] > 0  # the edit's size against the step is reported


def test_relearning_on_unrelated_text_alone_moves_the_hidden_items_back(results: dict[str, dict[str, Any]]) -> None:
    """Fine-tuning on the held-out texts only (no D_f item): the gradient-ascent model's D_f NLL falls from above
    the reference's to below it, while the reference, which never held D_f, stays where it was."""
    attacked, base = results["unlearned"]["relearn_unrelated"], results["reference"]["relearn_unrelated"]
    assert attacked["0"]["nll"] > base["0"]["nll"] + 0.3
    assert attacked["20"]["nll"] < attacked["0"]["nll"] - 0.5 and attacked["20"]["nll"] < base["0"]["nll"] - 0.1
    assert all(abs(p["nll"] - base["0"]["nll"]) < 0.05 for p in base.values())


def test_the_reference_shows_nothing(results: dict[str, dict[str, Any]]) -> None:
    out = results["reference"]
    assert out["direct"]["span_ma"] == 0.0 and out["int4"]["span_ma"] <= 0.1 and out["paraphrase"]["span_ma"] <= 0.1
    assert max(out["sampling"].values()) == 0.0
    assert out["logit_lens"]["best_top1"] <= 0.1
    assert set(privacy_leak(out, out).values()) == {0.0}


def test_attacks_config_checks() -> None:
    with pytest.raises(ValueError, match="bits=\\[8, 1\\] invalid; allowed: one or more integers >= 2"):
        AttacksConfig(bits=(8, 1))
    with pytest.raises(ValueError, match="increasing integers"):
        AttacksConfig(relearn_steps=(30, 10)).relearn()


def test_one_forward_measures_as_the_two_separate_ones() -> None:
    """span_ma_nll gives span_ma's and sequence_nll's values (rows of odd lengths, one without a span, batches of 3)."""
    gen = torch.Generator().manual_seed(7)
    rows = [torch.randint(3, 90, (n,), generator=gen).tolist() for n in (9, 12, 7, 11, 10)]
    seqs = of(rows, [(4, 8), (6, 11), None, (2, 5), (5, 9)])
    model = tiny_llama(seed=3).eval()
    got = span_ma_nll(model, seqs, 0, 3)
    assert got["span_ma"] == pytest.approx(span_ma(model, seqs, 0, 3), abs=1e-6)
    assert got["nll"] == pytest.approx(float(sequence_nll(model, seqs, 0, 3).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="secret span"):
        span_ma_nll(model, of(rows[:2], [None, None]), 0, 3)


def test_the_reused_step_0_is_what_measuring_the_attackers_copy_gives(
        setup: tuple[CausalProbe, dict[str, torch.nn.Module]], results: dict[str, dict[str, Any]]) -> None:
    """The audit passes direct's numbers as relearning's step 0 on unrelated text; measuring the attacker's copy
    before its first step, as relearn does without them, gives the same numbers."""
    probe, model = setup[0], setup[1]["unlearned"]
    n_items, make_loss, measure = probe.relearn_unrelated()
    first = relearn(model, make_loss, n_items, RelearnConfig(steps=(1,)), measure)[0]
    assert first["span_ma"] == pytest.approx(results["unlearned"]["direct"]["span_ma"], abs=1e-6)
    assert first["nll"] == pytest.approx(results["unlearned"]["direct"]["nll"], rel=1e-5)
