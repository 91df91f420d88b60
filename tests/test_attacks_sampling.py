"""Sampled extraction: leak@k's estimator, and on a tiny causal LM that memorised its texts, sampling emits the
secrets, still finds some once the model's confidence is flattened (more often with more samples), while the
unedited model emits none."""
from __future__ import annotations

import pytest
import torch

from lib.attacks.sampling import SamplingConfig, hits, leak_at_k
from lib.families.causal import of
from tests.tiny_models import memorise_ffn, tiny_llama


def test_leak_at_k_estimator() -> None:
    assert leak_at_k([0, 0], 8, [1, 8]) == {1: 0.0, 8: 0.0}
    assert leak_at_k([8], 8, [1]) == {1: 1.0}
    one = leak_at_k([1], 4, [1, 2, 4])  # one hit in 4 samples
    assert one[1] == pytest.approx(0.25) and one[2] == pytest.approx(0.5) and one[4] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        leak_at_k([1], 4, [5])
    with pytest.raises(ValueError, match="top_p=1.5 invalid; allowed: a number in"):
        SamplingConfig(top_p=1.5)


def test_sampling_finds_memorised_secrets_and_nothing_in_an_unedited_model() -> None:
    torch.manual_seed(0)
    rows = torch.randint(3, 90, (4, 10), generator=torch.Generator().manual_seed(1)).tolist()
    prefixes, secrets = [r[:5] for r in rows], [r[5:9] for r in rows]
    cfg = SamplingConfig(n_samples=16, max_new=6, temperature=1.0, top_p=0.95, batch_size=8, seed=0)
    memorised = memorise_ffn(tiny_llama(seed=0), of(rows)).eval()
    found = hits(memorised, prefixes, secrets, cfg)
    assert sum(found) >= 32 and sum(c > 0 for c in found) >= 3, found  # memorised: most samples emit the secret
    assert hits(memorised, prefixes, secrets, cfg) == found  # seeded: the same samples again
    assert hits(tiny_llama(seed=0).eval(), prefixes, secrets, cfg) == [0, 0, 0, 0]
    with torch.no_grad():  # flatten the confidence: the secret is no longer certain, sampling still finds it
        dict(memorised.named_parameters())["model.norm.weight"].mul_(0.5)
    softened = hits(memorised, prefixes, secrets, cfg)
    leak = leak_at_k(softened, 16, [1, 16])
    assert 0 < sum(softened) < sum(found) and leak[16] > 2 * leak[1], (softened, leak)
