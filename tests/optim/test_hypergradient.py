"""SGD with hypergradient descent against torch.optim.SGD and hand-computed updates."""

from __future__ import annotations

import pytest
import torch

from adaloss.optim import HypergradientSGD


def _quadratic_steps(opt_factory, steps: int = 5):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    a = a @ a.T + torch.eye(4, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
    opt = opt_factory([w, b])
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * w @ a @ w + (b**2).sum() + (w[:2] * b).sum()
        loss.backward()
        opt.step()
    return w.detach(), b.detach(), opt


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 1e-2), (0.9, True, 0.0)])
def test_without_hypergradient_it_is_torch_sgd(momentum: float, nesterov: bool, weight_decay: float) -> None:
    kw = {"lr": 0.05, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    ours = _quadratic_steps(lambda p: HypergradientSGD(p, hypergrad_lr=0.0, **kw))
    ref = _quadratic_steps(lambda p: torch.optim.SGD(p, **kw))
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-14)


def test_the_learning_rate_follows_the_hand_computed_hypergradient() -> None:
    # f(θ) = ½ θ², so g = θ: θ1 = θ0 − α0 θ0; α1 = α0 + β g1·g0 = α0 + β θ1 θ0; θ2 = θ1 − α1 θ1
    theta0, alpha0, beta = 2.0, 0.1, 0.01
    p = torch.nn.Parameter(torch.tensor([theta0], dtype=torch.float64))
    opt = HypergradientSGD([p], lr=alpha0, hypergrad_lr=beta)
    lrs = []
    for _ in range(2):
        opt.zero_grad()
        (0.5 * p**2).sum().backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    theta1 = theta0 - alpha0 * theta0
    alpha1 = alpha0 + beta * theta1 * theta0
    theta2 = theta1 - alpha1 * theta1
    assert lrs == pytest.approx([alpha0, alpha1], abs=1e-15)
    assert float(p.detach()) == pytest.approx(theta2, abs=1e-15)


def test_with_momentum_the_hypergradient_uses_the_last_update_direction() -> None:
    # u_t = −v_t, v_t = μ v_{t−1} + g_t; α_t = α_{t−1} − β g_t·u_{t−1} = α_{t−1} + β g_t·v_{t−1}
    theta, alpha, beta, mu = 1.5, 0.2, 0.05, 0.5
    p = torch.nn.Parameter(torch.tensor([theta], dtype=torch.float64))
    opt = HypergradientSGD([p], lr=alpha, hypergrad_lr=beta, momentum=mu)
    v = None
    for _ in range(4):
        opt.zero_grad()
        (0.5 * p**2).sum().backward()
        opt.step()
        g = theta
        if v is not None:
            alpha = alpha + beta * g * v
        v = g if v is None else mu * v + g
        theta = theta - alpha * v
        assert opt.param_groups[0]["lr"] == pytest.approx(alpha, abs=1e-14)
        assert float(p.detach()) == pytest.approx(theta, abs=1e-14)


def test_state_round_trips_and_resumes_the_same() -> None:
    full = _quadratic_steps(lambda p: HypergradientSGD(p, lr=0.05, hypergrad_lr=0.01, momentum=0.9), steps=6)
    w_half, b_half, opt = _quadratic_steps(lambda p: HypergradientSGD(p, lr=0.05, hypergrad_lr=0.01, momentum=0.9),
                                           steps=3)
    assert opt.param_groups[0]["lr"] != 0.05
    state = opt.state_dict()
    w = torch.nn.Parameter(w_half.clone())
    b = torch.nn.Parameter(b_half.clone())
    again = HypergradientSGD([w, b], lr=0.05, hypergrad_lr=0.01, momentum=0.9)
    again.load_state_dict(state)
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    a = a @ a.T + torch.eye(4, dtype=torch.float64)
    for _ in range(3):
        again.zero_grad()
        (0.5 * w @ a @ w + (b**2).sum() + (w[:2] * b).sum()).backward()
        again.step()
    torch.testing.assert_close(w.detach(), full[0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("kwargs,match", [({"lr": -1.0}, "`lr`"), ({"hypergrad_lr": -1e-3}, "`hypergrad_lr`"),
                                          ({"nesterov": True}, "nesterov")])
def test_bad_settings_name_the_argument(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        HypergradientSGD([torch.nn.Parameter(torch.zeros(1))], **kwargs)
