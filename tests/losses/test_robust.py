"""Generalised and symmetric cross-entropy against their formulas written out per example."""

from __future__ import annotations

import math

import pytest
import torch

from adaloss.losses import GeneralizedCrossEntropy, SymmetricCrossEntropy, create_loss


def _probs(logits: torch.Tensor) -> list[list[float]]:
    return [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]


def test_gce_matches_the_formula_per_example() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2, 0])
    q = 0.7
    expected = sum((1 - p[t] ** q) / q for p, t in zip(_probs(logits), y.tolist())) / 3
    assert GeneralizedCrossEntropy(q)(logits, y).item() == pytest.approx(expected, abs=1e-12)


def test_gce_tends_to_cross_entropy_and_is_mae_at_q_one() -> None:
    logits = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 5
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert GeneralizedCrossEntropy(1e-6)(logits, y).item() == pytest.approx(ce.item(), rel=1e-5)
    p = torch.softmax(logits, -1)
    mae_half = (1 - p[torch.arange(8), y]).mean()  # ½‖p − e_y‖₁
    assert GeneralizedCrossEntropy(1.0)(logits, y).item() == pytest.approx(mae_half.item(), abs=1e-12)


def test_sce_matches_the_formula_per_example() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 2, 0])
    alpha, beta, a = 0.1, 1.0, -4.0
    total = 0.0
    for p, t in zip(_probs(logits), y.tolist()):
        ce = -math.log(p[t])
        rce = -sum(pk * (0.0 if k == t else a) for k, pk in enumerate(p))  # −Σ p_k log q_k, log 0 := A
        total += alpha * ce + beta * rce
    assert SymmetricCrossEntropy(alpha, beta, a)(logits, y).item() == pytest.approx(total / 3, abs=1e-12)


def test_gradients_match_float64_finite_differences() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    for loss in (GeneralizedCrossEntropy(0.5), SymmetricCrossEntropy(0.3, 0.7)):
        assert torch.autograd.gradcheck(lambda z, loss=loss: loss(z, y), (logits,))


def test_registered_for_classification_with_checked_options() -> None:
    assert isinstance(create_loss("gce", task="classification", q=0.5), GeneralizedCrossEntropy)
    assert isinstance(create_loss("sce", task="classification", alpha=1.0), SymmetricCrossEntropy)
    with pytest.raises(ValueError, match=r"`q` to be in \(0, 1\], but got 0"):
        GeneralizedCrossEntropy(0.0)
    with pytest.raises(ValueError, match="`log_zero` to be negative"):
        SymmetricCrossEntropy(log_zero=0.0)
    with pytest.raises(ValueError, match="for classification"):
        create_loss("gce", task="regression")
