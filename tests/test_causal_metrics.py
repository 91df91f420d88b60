"""Causal-LM metrics: perplexity, MIA distances, histograms, changed parameters, redaction, extraction examples."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.core.adapter import FFNAdapter
from lib.core.metrics import changed_parameters, histogram, mia_distances
from lib.families.causal import of, perplexity
from lib.families.extraction import REDACTED, extraction_example, redact
from lib.families.memorization import greedy_continuations
from tests.tiny_models import HIDDEN, tiny_gpt2, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- perplexity

def direct_nll(model: nn.Module, row: list[int]) -> tuple[float, int]:
    """Summed NLL of tokens 1..T-1 of one unpadded row, and their count."""
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([row])).logits[0, :-1].log_softmax(-1)
    return -float(logp.gather(1, torch.tensor(row[1:])[:, None]).sum()), len(row) - 1


def test_perplexity_is_token_weighted_exp_of_direct_nll() -> None:
    model = tiny_gpt2().double()
    rows = [[3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    sums, counts = zip(*(direct_nll(model, r) for r in rows))
    expected = math.exp(sum(sums) / sum(counts))
    assert perplexity(model, of(rows), pad_id=0, batch_size=2) == pytest.approx(expected, rel=1e-12)
    per_sequence_mean = sum(math.exp(s / c) for s, c in zip(sums, counts)) / len(rows)
    assert not math.isclose(expected, per_sequence_mean, rel_tol=1e-9)  # the weighting matters here


def test_perplexity_rejects_empty() -> None:
    with pytest.raises(ValueError, match="0 sequences"):
        perplexity(tiny_gpt2(), of([]), pad_id=0)


# ---------------------------------------------------------------- MIA and histogram

def test_mia_distances_hand_made() -> None:
    forget = torch.tensor([1.0, 3.0, 4.5])
    valid = torch.tensor([2.0, 4.0])  # mean 3.0
    torch.testing.assert_close(mia_distances(forget, valid), torch.tensor([2.0, 0.0, 1.5]))
    with pytest.raises(ValueError, match="valid_nll"):
        mia_distances(forget, torch.tensor([]))
    with pytest.raises(ValueError, match=r"forget_nll.*\(2, 1\)"):
        mia_distances(torch.ones(2, 1), valid)


def test_histogram_counts() -> None:
    out = histogram(torch.tensor([0.1, 0.2, 0.6, 1.0, 1.7, -0.5]), bins=2, range=(0.0, 1.0))
    assert out == {"edges": [0.0, 0.5, 1.0], "counts": [2, 2], "below": 1, "above": 1, "n": 6}
    with pytest.raises(ValueError, match="NaN"):
        histogram([math.nan], bins=2, range=(0.0, 1.0))
    with pytest.raises(ValueError, match="bins=0"):
        histogram([0.5], bins=0, range=(0.0, 1.0))


# ---------------------------------------------------------------- changed parameters

@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_changed_parameters_one_column(build) -> None:
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = FFNAdapter.for_model(model)
    neuron = torch.tensor([5])
    adapter.set_columns(1, neuron, adapter.get_columns(1, neuron) + 1.0)
    after = model.state_dict()
    assert changed_parameters(before, after) == (HIDDEN, sum(v.numel() for v in before.values()))
    assert changed_parameters(before, before)[0] == 0


def test_changed_parameters_rejects_mismatched_keys() -> None:
    a = {"w": torch.zeros(2), "b": torch.zeros(1)}
    with pytest.raises(ValueError, match="'b'"):
        changed_parameters(a, {"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="'c'"):
        changed_parameters(a, {**a, "c": torch.zeros(1)})
    with pytest.raises(ValueError, match="'w' changed shape"):
        changed_parameters(a, {"w": torch.zeros(3), "b": torch.zeros(1)})


# ---------------------------------------------------------------- redaction and extraction examples

def test_redact_secrets_and_phone_like_digits() -> None:
    text = "Call John Smith at 555-123-4567 or 5 5 5 9 8 7 6 5 4 3, room 42, year 2024, id 1234567."
    out = redact(text, ["John Smith", "Smith"], allow=False)
    assert out == (f"Call {REDACTED} at {REDACTED} or {REDACTED}, room 42, year 2024, id {REDACTED}.")
    assert redact(text, ["John Smith"], allow=True) == text
    assert redact("nothing here", ["", "absent"], allow=False) == "nothing here"


class CharTokenizer:
    """Character tokenizer over the tiny vocabulary: id i is chr(32 + i); ids 0..2 are special."""

    pad_token_id = 0

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (characters ' '..chr(132))."""
        return [ord(c) - 32 for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`, special ids dropped when asked."""
        return "".join(chr(32 + i) for i in ids if not (skip_special_tokens and i < 3))


def test_extraction_example_flags_before_redacting() -> None:
    model, tok = tiny_llama().double(), CharTokenizer()
    prefix = "Bob's number is 5551234"
    emitted = tok.decode(greedy_continuations(model, [tok.encode(prefix)], [6], 0)[0], skip_special_tokens=True)
    secret = emitted.strip()[:3]
    assert secret and secret.strip() == secret
    hidden = extraction_example(model, tok, prefix, 6, [secret, "Bob"], allow_private=False)
    assert hidden["contains_secret"] is True
    assert secret not in hidden["continuation"] and REDACTED in hidden["continuation"]
    assert hidden["prefix"] == f"{REDACTED}'s number is {REDACTED}"
    shown = extraction_example(model, tok, prefix, 6, [secret], allow_private=True)
    assert shown == {"prefix": prefix, "continuation": emitted, "contains_secret": True}
    too_long = "z" * 7  # six new characters cannot hold it
    assert extraction_example(model, tok, prefix, 6, [too_long], allow_private=False)["contains_secret"] is False
