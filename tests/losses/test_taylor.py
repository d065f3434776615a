"""TaylorGLO's Taylor-polynomial loss against values and derivatives written out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import adaloss
from adaloss.functional import taylor_loss, taylor_polynomial
from adaloss.losses import TaylorLoss

THETA = [0.25, 0.5, 1.5, -2.0, 0.75, 0.375, -1.125, 0.875]  # exact in float32, the buffer dtype


def f_hand(x: float, y: float, t: list[float]) -> float:
    """f(x, y) of the paper, term by term."""
    a, b = x - t[0], y - t[1]
    return (t[2] * b + 0.5 * t[3] * b**2 + (1 / 6) * t[4] * b**3
            + t[5] * a * b + 0.5 * t[6] * a * b**2 + 0.5 * t[7] * a**2 * b)


def df_dy_hand(x: float, y: float, t: list[float]) -> float:
    """∂f/∂y, differentiated by hand."""
    a, b = x - t[0], y - t[1]
    return t[2] + t[3] * b + 0.5 * t[4] * b**2 + t[5] * a + t[6] * a * b + 0.5 * t[7] * a**2


def test_polynomial_matches_hand_values() -> None:
    xs, ys = [0.0, 1.0, -0.5, 2.0], [0.25, 0.9, 1.5, -1.0]
    got = taylor_polynomial(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64),
                            torch.tensor(THETA, dtype=torch.float64))
    assert got.tolist() == pytest.approx([f_hand(x, y, THETA) for x, y in zip(xs, ys)], rel=1e-12)
    # one value fully by hand: x = 1, y = 0.9, a = 0.75, b = 0.4
    by_hand = (1.5 * 0.4 - 1.0 * 0.16 + 0.75 / 6 * 0.064 + 0.375 * 0.75 * 0.4
               - 0.5625 * 0.75 * 0.16 + 0.4375 * 0.5625 * 0.4)
    assert got[1].item() == pytest.approx(by_hand, rel=1e-12)


def test_regression_loss_and_gradient_match_hand_values() -> None:
    pred = [[0.25, -1.0], [1.5, 0.75]]
    target = [[0.0, 2.0], [-0.5, 1.0]]
    p = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    loss = TaylorLoss(task="regression", theta=THETA).double()(p, torch.tensor(target, dtype=torch.float64))
    pairs = [(target[n][i], pred[n][i]) for n in range(2) for i in range(2)]
    expected = -sum(f_hand(x, y, THETA) for x, y in pairs) / 4  # mean over outputs and batch
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(loss, p)
    expected_grad = [[-df_dy_hand(target[n][i], pred[n][i], THETA) / 4 for i in range(2)] for n in range(2)]
    for got_row, exp_row in zip(grad.tolist(), expected_grad):
        assert got_row == pytest.approx(exp_row, rel=1e-10)


def test_classification_uses_softmax_and_one_hot() -> None:
    logits = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    target = [0, 2]
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = TaylorLoss(task="classification", theta=THETA).double()(z, torch.tensor(target))
    total, dfdp = 0.0, []
    for row, c in zip(logits, target):
        e = [math.exp(v) for v in row]
        probs = [v / sum(e) for v in e]
        total += sum(f_hand(1.0 if i == c else 0.0, probs[i], THETA) for i in range(3))
        dfdp.append([df_dy_hand(1.0 if i == c else 0.0, probs[i], THETA) for i in range(3)])
    assert loss.item() == pytest.approx(-total / 6, rel=1e-12)
    # chain rule through the softmax by hand: dL/dz_j = -(1/6) Σ_i ∂f/∂p_i · p_i (δ_ij − p_j)
    (grad,) = torch.autograd.grad(loss, z)
    for n, row in enumerate(logits):
        e = [math.exp(v) for v in row]
        probs = [v / sum(e) for v in e]
        expected = [-sum(dfdp[n][i] * probs[i] * ((i == j) - probs[j]) for i in range(3)) / 6 for j in range(3)]
        assert grad[n].tolist() == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_gradcheck_float64_in_prediction_and_theta() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(3, 4, generator=g, dtype=torch.float64)
    theta = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, t: taylor_loss(a, y, t), (p, theta))
    assert torch.autograd.gradgradcheck(lambda a, t: taylor_loss(a, y, t), (p, theta))


def test_zero_theta_is_a_constant_loss() -> None:
    z = torch.randn(5, 3, requires_grad=True)
    loss = TaylorLoss()(z, torch.tensor([0, 1, 2, 0, 1]))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.count_nonzero(grad) == 0


def test_theta_is_a_buffer_and_the_loss_saves_and_loads(tmp_path: Path) -> None:
    loss = TaylorLoss(task="classification", theta=THETA)
    assert list(loss.parameters()) == [] and "theta" in loss.state_dict()
    assert loss.config() == {"task": "classification", "theta": pytest.approx(THETA)}
    again = adaloss.losses.load(adaloss.losses.save(loss, tmp_path / "taylor.pt"))
    assert isinstance(again, TaylorLoss) and torch.equal(again.theta, loss.theta)
    z, t = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert torch.equal(again(z, t), loss(z, t))
    curves = loss.curves(num=11)
    assert curves["kind"] == "classification" and len(curves["loss_target1"]) == 11
    assert curves["loss_target1"][4] == pytest.approx(-f_hand(1.0, 0.4, THETA))


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match=r"Expected `theta` to be 8 finite numbers"):
        TaylorLoss(theta=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"Expected `theta` to be 8 finite numbers"):
        TaylorLoss(theta=[math.nan] * 8)
    with pytest.raises(ValueError, match=r"Expected `task` to be one of"):
        TaylorLoss(task="ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `theta` of shape \(8,\)"):
        taylor_loss(torch.zeros(2), torch.zeros(2), torch.zeros(7))
    with pytest.raises(ValueError, match="same shape"):
        taylor_loss(torch.zeros(2, 3), torch.zeros(2), torch.zeros(8))
    with pytest.raises(ValueError, match=r"class indices of shape \(N,\)"):
        TaylorLoss()(torch.zeros(2, 3), torch.zeros(2, 3))
