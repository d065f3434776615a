from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adaloss.losses import FocalLoss, create_loss


def test_focal_matches_hand_computed_value() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    target = torch.tensor([0, 2])
    # by hand: p_t = exp(z_t) / sum exp(z)
    z0 = [2.0, 0.0, -1.0]
    z1 = [0.5, 1.5, 0.0]
    p0 = math.exp(2.0) / sum(math.exp(v) for v in z0)
    p1 = math.exp(0.0) / sum(math.exp(v) for v in z1)
    expected = -((1 - p0) ** 2 * math.log(p0) + (1 - p1) ** 2 * math.log(p1)) / 2
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (16,), generator=g)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), F.cross_entropy(logits, target))


def test_focal_gradient_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 1])
    assert torch.autograd.gradcheck(lambda z: FocalLoss(gamma=1.5)(z, target), (logits,))


def test_label_smoothing_matches_hand_computed_value() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([2])
    eps = 0.1
    logp = F.log_softmax(logits, dim=-1)[0].tolist()
    expected = -((1 - eps) * logp[2] + eps / 3 * sum(logp))
    loss = create_loss("label_smoothing", task="classification", smoothing=eps)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_create_loss_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"Expected `loss` to be one of .*'focal'.*but got 'focall'.*Did you mean 'focal'"):
        create_loss("focall", task="classification")
    with pytest.raises(ValueError, match="Loss 'mse' is for regression, but the task is classification"):
        create_loss("mse", task="classification")
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['gama'\] for loss 'focal'; accepted options: \['gamma'\]"):
        create_loss("focal", task="classification", gama=1.0)
    with pytest.raises(ValueError, match="`gamma` to be >= 0, but got -1"):
        FocalLoss(gamma=-1)
