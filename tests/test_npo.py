"""NPO on tiny models of both families: its loss, its gradient next to GA's, and that it unlearns."""
from __future__ import annotations

import copy
import math
import tempfile
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, BertForMaskedLM

from lib.core.editing import WeightDelta, apply_edit
from lib.core.models import resolve_model_source
from lib.data.records import SecretRecord
from lib.families.causal import CausalFamily, of
from lib.families.masked import MaskedFamily, secret_token_rows
from lib.methods import Inputs, make_config, npo, unlearn
from lib.methods.training import nll_sum
from tests.tiny_models import memorise_all, save_tiny_bert_checkpoint, tiny_gpt2, tiny_llama

FORGET = [[17, 42, 63, 8, 91, 33, 55, 2], [70, 12, 29, 84, 46, 5, 77, 2]]
FAMILY = CausalFamily(SimpleNamespace(pad_token_id=0), batch_size=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def memorised(build) -> torch.nn.Module:
    """A tiny causal LM (float64: no CPU-kernel edge) that predicts every token of FORGET."""
    return memorise_all(build().double(), FORGET)


def inputs(stop: float | None = 0.5) -> Inputs:
    """The forget set as causal inputs."""
    return Inputs(family=FAMILY, forget=of(FORGET), stop=stop, seed=0)


def test_loss_at_the_reference_is_2_log2_over_beta_and_its_gradient_is_ga_s() -> None:
    model = memorised(tiny_gpt2)
    reference = npo.reference_nll(model, inputs())
    loss = npo.npo_sum(model, inputs(), reference, [0, 1], beta=0.1)
    # two samples at the reference, log σ(0) = -log 2; the loss is computed in float32
    assert loss.item() == pytest.approx(2 * (2 / 0.1) * math.log(2), rel=1e-6)
    params = [p for p in model.parameters() if p.requires_grad]
    npo_grad = torch.autograd.grad(loss, params)
    ga_grad = torch.autograd.grad(-nll_sum(model, FAMILY, of(FORGET), [0, 1]), params)
    # at the reference σ(β·0) = 1/2: NPO's gradient is (2/β)·(β/2)·∇(-log π) = GA's on the summed NLL
    for a, b in zip(npo_grad, ga_grad):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-7)


def test_weight_of_a_sample_shrinks_as_it_is_forgotten() -> None:
    """d loss / d log-ratio = 2 σ(β r): a sample already far below the reference pushes less."""
    r = torch.tensor([0.0, -5.0, -50.0], requires_grad=True)
    (-(2 / 0.1) * F.logsigmoid(-0.1 * r)).sum().backward()
    assert r.grad[0] > r.grad[1] > r.grad[2] > 0 and r.grad[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_unlearns_a_memorised_causal_forget_set(build) -> None:
    model = memorised(build)
    assert (FAMILY.memorization(model, of(FORGET)) == 1).all()
    before = nll_sum(model, FAMILY, of(FORGET), [0, 1]).item()
    original = copy.deepcopy(model)
    outcome = unlearn("npo", model, inputs(stop=0.5), npo.Config(learning_rate=3e-3, batch_size=2, max_steps=60))
    report = outcome.report
    assert report.reached and report.method == "npo" and 0 < report.steps <= 60
    assert (FAMILY.memorization(model, of(FORGET)) <= 0.5).all()
    assert nll_sum(model, FAMILY, of(FORGET), [0, 1]).item() > before + 1.0  # with margin
    assert isinstance(outcome.edit, WeightDelta) and outcome.changed > 0
    replay = copy.deepcopy(original)
    apply_edit(replay, outcome.edit)
    assert all(torch.equal(a, b) for a, b in zip(replay.state_dict().values(), model.state_dict().values()))


def test_runs_on_masked_lms_at_a_fixed_strength() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_bert_checkpoint(tmp)
        model = BertForMaskedLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("embedded:minilm"))
    record = SecretRecord("TEL-0001", "TEL", "my phone number is ", "5 5 5 1 2 3 4 5 6 7", " .", 3, False)
    rows = secret_token_rows(tokenizer, [record], 32)
    family = MaskedFamily(tokenizer, batch_size=4, max_len=32)
    masked_inputs = Inputs(family=family, forget=rows, records=(record,), stop=None, seed=0)
    before = family.sample_nll(model, rows, list(range(len(rows)))).sum().item()
    cfg = make_config("npo", {"learning_rate": 1e-2, "batch_size": 4, "max_steps": 5})
    outcome = unlearn("npo", model, masked_inputs, cfg)
    assert outcome.report.reached is None and outcome.report.steps == 5  # no stop rule: the configured strength
    assert family.sample_nll(model, rows, list(range(len(rows)))).sum().item() > before


def test_config_rejects_bad_values_and_retain_weight_needs_a_retain_set() -> None:
    for bad in ({"beta": 0.0}, {"learning_rate": -1.0}, {"batch_size": 0}, {"max_steps": 0}, {"retain_weight": -0.5}):
        with pytest.raises(ValueError):
            npo.Config(**bad)
    with pytest.raises(ValueError, match="retain"):
        npo.run(memorised(tiny_gpt2), inputs(), npo.Config(retain_weight=1.0))
