"""MaskedSophia (SIMU Eq. 3-7): hand-computed steps, bit-exact masking, hyper-parameter checks."""
from __future__ import annotations

import pytest
import torch

from lib.methods.sophia import MaskedSophia

THETA0 = [1.0, -2.0, 0.5, 3.0, 0.25]
# per step: entry 0 clips at +1 (small g), 1 stays inside (large g), 2 clips at -1, 3 has g = 0 (eps branch)
GRADS = [[1.0, 100.0, -1.0, 0.0, 3.0], [1.0, 50.0, -2.0, 0.0, -3.0], [-1.0, 80.0, -1.0, 0.0, 5.0]]
LR, B1, B2, GAMMA, EPS = 0.1, 0.9, 0.5, 0.01, 1e-12


def _by_hand(weight_decay: float) -> tuple[list[list[float]], list[list[str]]]:
    """Parameters after each step and which clip branch each entry took, with plain float arithmetic."""
    theta, m, h, out, kinds = list(THETA0), [0.0] * 5, [0.0] * 5, [], []
    for grads in GRADS:
        step_kinds = []
        for i, g in enumerate(grads):
            m[i] = B1 * m[i] + (1 - B1) * g
            h[i] = B2 * h[i] + (1 - B2) * g * g
            ratio = m[i] / max(GAMMA * h[i], EPS)
            clipped = min(1.0, max(-1.0, ratio))
            step_kinds.append("+1" if ratio >= 1 else "-1" if ratio <= -1 else "in")
            theta[i] = theta[i] - LR * weight_decay * theta[i] - LR * clipped
        out.append(list(theta))
        kinds.append(step_kinds)
    return out, kinds


def _run(weight_decay: float) -> list[torch.Tensor]:
    """The optimizer's parameter after each of the three steps."""
    param = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    opt = MaskedSophia([param], lr=LR, betas=(B1, B2), gamma=GAMMA, eps=EPS, weight_decay=weight_decay)
    out = []
    for grads in GRADS:
        param.grad = torch.tensor(grads, dtype=torch.float64)
        opt.step()
        out.append(param.detach().clone())
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.2])
def test_three_steps_match_hand_computation(weight_decay: float) -> None:
    """Eq. 3-4 (+ decoupled decay) over three steps, with entries clipped at +1, at -1 and not clipped."""
    expected, kinds = _by_hand(weight_decay)
    for step, got in enumerate(_run(weight_decay)):
        assert {"+1", "-1", "in"} <= set(kinds[step])
        assert torch.allclose(got, torch.tensor(expected[step], dtype=torch.float64), rtol=1e-13, atol=1e-15)


def test_first_step_literal_values() -> None:
    """Step 1 without decay: clipped entries move by exactly lr, the inside one by lr * 0.2, g = 0 not at all."""
    got = _run(0.0)[0]
    # entry 1: m = 0.1 * 100 = 10, H = 0.5 * 100^2 = 5000, ratio = 10 / (0.01 * 5000) = 0.2
    assert torch.allclose(got, torch.tensor([0.9, -2.02, 0.6, 3.0, 0.15], dtype=torch.float64), rtol=0, atol=1e-14)
    assert got[3] == 3.0


def test_mask_keeps_non_critical_entries_and_state_bit_identical() -> None:
    """With a column mask, masked-off entries (and their m, H) keep their exact bits; critical ones move."""
    gen = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(3, 4, generator=gen, dtype=torch.float64))
    mask = torch.tensor([[True, False, True, False]])
    opt = MaskedSophia([param], lr=0.05, masks=[torch.ones(3, 4, dtype=torch.bool)])
    param.grad = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    opt.step()  # unmasked first step: the state is non-zero everywhere
    opt.param_groups[0]["masks"][0] = mask
    state = opt.state[param]
    before = [param.detach().clone(), state["exp_avg"].clone(), state["hessian"].clone()]
    for _ in range(2):
        param.grad = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        opt.step()
    after = [param.detach(), state["exp_avg"], state["hessian"]]
    for old, new in zip(before, after):
        assert torch.equal(old[:, [1, 3]], new[:, [1, 3]])
        assert not torch.equal(old[:, [0, 2]], new[:, [0, 2]])


def test_mask_matches_unmasked_update_on_critical_entries() -> None:
    """Critical entries follow exactly the unmasked optimizer; a float32 parameter keeps its dtype."""
    gen = torch.Generator().manual_seed(1)
    start, grads = torch.randn(4, 3, generator=gen), [torch.randn(4, 3, generator=gen) for _ in range(3)]
    masked, plain = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    mask = torch.tensor([[True], [False], [True], [False]])
    opts = [MaskedSophia([masked], lr=0.01, masks=[mask]), MaskedSophia([plain], lr=0.01)]
    for grad in grads:
        masked.grad, plain.grad = grad.clone(), grad.clone()
        for opt in opts:
            opt.step()
    assert masked.dtype == torch.float32
    assert torch.equal(masked[[0, 2]], plain[[0, 2]])
    assert torch.equal(masked[[1, 3]], start[[1, 3]])


def test_parameter_without_grad_is_skipped() -> None:
    """A parameter whose .grad is None keeps its value and gets no state."""
    param = torch.nn.Parameter(torch.ones(3))
    opt = MaskedSophia([param], lr=0.1)
    opt.step()
    assert torch.equal(param.detach(), torch.ones(3)) and not opt.state[param]


@pytest.mark.parametrize("kwargs, word", [
    ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": -1.0}, "lr"),
    ({"betas": (1.0, 0.9)}, "betas"), ({"betas": (0.9, -0.1)}, "betas"), ({"betas": (0.9,)}, "betas"),
    ({"gamma": 0.0}, "gamma"), ({"eps": -1e-12}, "eps"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"weight_decay": float("inf")}, "weight_decay"),
])
def test_bad_hyper_parameters_raise(kwargs: dict, word: str) -> None:
    """Each out-of-range hyper-parameter raises ValueError naming it."""
    args = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=word):
        MaskedSophia([torch.nn.Parameter(torch.ones(2))], **args)


@pytest.mark.parametrize("masks, word", [
    ([torch.ones(2, 3)], "bool"),  # float mask
    ([torch.ones(5, dtype=torch.bool)], "broadcast"),  # wrong shape
    ([torch.ones(2, 1, 3, dtype=torch.bool)], "broadcast"),  # broadcasts, but to a bigger shape
    ([None, None], "2 masks for 1"),
])
def test_bad_masks_raise(masks: list, word: str) -> None:
    """Masks must be bool, broadcastable to their parameter, one per parameter."""
    with pytest.raises(ValueError, match=word):
        MaskedSophia([torch.nn.Parameter(torch.ones(2, 3))], lr=0.1, masks=masks)


def test_masks_as_param_group_key() -> None:
    """A group's own "masks" key works and is validated like the constructor argument."""
    a, b = (torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(2))
    opt = MaskedSophia([{"params": [a], "masks": [torch.tensor([True, False])]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    opt.step()
    assert a.tolist() == [-0.1, 0.0] and b.tolist() == [-0.1, -0.1]
    with pytest.raises(ValueError, match="bool"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "masks": [torch.zeros(2)]})
