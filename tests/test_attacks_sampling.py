"""Sampled extraction: leak@k's estimator, and on a tiny causal LM that memorised its texts, sampling emits the
secrets, still finds some once the model's confidence is flattened (more often with more samples), while the
unedited model emits none."""
from __future__ import annotations

import pytest
import torch

from lib.attacks.sampling import SamplingConfig, continue_rows, hits, leak_at_k, row_groups
from lib.families.causal import of
from tests.tiny_models import memorise_ffn, tiny_gpt2, tiny_llama


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


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_prefixes_of_unequal_length_share_a_batch_and_read_as_they_would_alone(build) -> None:
    """Left padding with positions counted over real tokens: near-greedy sampling (temperature 1e-4) of prefixes of
    2 to 12 tokens in one batch continues each as greedy decoding of that prefix alone does, whatever the number
    of rows per batch (GPT-2's absolute positions shifted by the padding, or a pad token read, would change it)."""
    model = build(seed=3).eval()
    rows = torch.randint(3, 90, (5, 12), generator=torch.Generator().manual_seed(2)).tolist()
    prefixes = [row[:n] for row, n in zip(rows, (2, 12, 6, 3, 9))]
    greedy = []
    with torch.no_grad():
        for prefix in prefixes:
            ids = torch.tensor([prefix])
            for _ in range(5):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            greedy.append(ids[0, len(prefix):].tolist())
    for batch_size in (3, 10):
        cfg = SamplingConfig(n_samples=2, max_new=5, temperature=1e-4, top_p=0.95, batch_size=batch_size, seed=0)
        assert hits(model, prefixes, greedy, cfg) == [2] * 5, batch_size
    with pytest.raises(ValueError, match="5 prefixes for 4 secrets"):
        hits(model, prefixes, greedy[:4], cfg)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_a_prompt_read_once_samples_as_its_copies_read_one_by_one(build) -> None:
    """continue_rows with copies: each prompt is read once and its cache copied to its samples; the same generator
    then draws the same tokens as with every copy a row of its own (prompts of unequal length, left-padded)."""
    model = build(seed=5).eval()
    gen = torch.Generator().manual_seed(6)
    prompts = [torch.randint(3, 90, (n,), generator=gen).tolist() for n in (4, 9, 6)]
    cfg = SamplingConfig(n_samples=3, max_new=5, temperature=1.0, top_p=0.95, seed=0)
    copied = continue_rows(model, prompts, [3, 1, 2], cfg, torch.Generator().manual_seed(0))
    each = continue_rows(model, [prompts[0]] * 3 + [prompts[1]] + [prompts[2]] * 2, [1] * 6, cfg,
                         torch.Generator().manual_seed(0))
    assert copied == each and len(copied) == 6 and all(len(row) == 5 for row in copied)


@pytest.mark.parametrize(("n", "samples", "batch"), [(3, 5, 4), (4, 8, 64), (2, 8, 3), (5, 1, 2)])
def test_row_groups_cover_every_sample_once_in_order(n: int, samples: int, batch: int) -> None:
    groups = row_groups(n, samples, batch)
    assert all(0 < sum(rows for _, rows in group) <= batch for group in groups)
    flat = [p for group in groups for p, rows in group for _ in range(rows)]
    assert flat == [p for p in range(n) for _ in range(samples)]
