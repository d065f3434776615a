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


# ---- metric-learning baselines (the metric-learning protocol of Huang et al., ICML 2019) ----------


def _pairs_by_hand(e: torch.Tensor, labels: torch.Tensor, cost) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Mean over the unordered pairs i < j of cost(distance, same label), in plain Python loops."""
    terms = []
    n = e.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            d = math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(e[i], e[j])))
            terms.append(cost(d, bool(labels[i] == labels[j])))
    return torch.tensor(sum(terms) / len(terms), dtype=torch.float64)


def test_contrastive_and_margin_losses_match_pairs_by_hand() -> None:
    from adaloss.losses import ContrastiveLoss, MarginLoss

    g = torch.Generator().manual_seed(0)
    e = torch.randn(7, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    unit = F.normalize(e, dim=1)
    want = _pairs_by_hand(unit, labels, lambda d, same: d**2 if same else max(0.0, 0.8 - d) ** 2)
    torch.testing.assert_close(ContrastiveLoss(margin=0.8)(e, labels), want)
    raw = _pairs_by_hand(e, labels, lambda d, same: d**2 if same else max(0.0, 2.5 - d) ** 2)
    torch.testing.assert_close(ContrastiveLoss(margin=2.5, normalize=False)(e, labels), raw)
    want = _pairs_by_hand(unit, labels, lambda d, same: max(0.0, 0.2 + (d - 1.2 if same else 1.2 - d)))
    torch.testing.assert_close(MarginLoss()(e, labels), want)


def test_contrastive_equals_the_pair_distance_loss_at_unit_weights_with_gradients() -> None:
    """The fixed baseline is exactly where ALA's pair-distance loss starts (Φ = 1)."""
    from adaloss.losses import ContrastiveLoss, MarginLoss
    from adaloss.losses.ala import PairDistanceLoss

    g = torch.Generator().manual_seed(1)
    e = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (10,), generator=g)
    for fixed, adaptive in ((ContrastiveLoss(), PairDistanceLoss().double()),
                            (MarginLoss(), PairDistanceLoss(base="margin", margin=0.2).double())):
        a, b = fixed(e, labels), adaptive(e, labels)
        torch.testing.assert_close(a, b)
        ga, = torch.autograd.grad(a, e)
        gb, = torch.autograd.grad(b, e)
        torch.testing.assert_close(ga, gb)
    assert torch.autograd.gradcheck(lambda x: ContrastiveLoss()(x, labels), (e,))


def test_embedding_losses_are_registered_for_the_embedding_task_only() -> None:
    from adaloss.learners import create_learner, methods_for
    from adaloss.losses import ContrastiveLoss

    assert isinstance(create_loss("contrastive", task="embedding", margin=0.5), ContrastiveLoss)
    assert {"contrastive", "margin"} <= set(methods_for("embedding"))
    assert "contrastive" not in methods_for("classification")
    with pytest.raises(ValueError, match=r"Loss 'contrastive' is for embedding, but the task is classification"):
        create_loss("contrastive", task="classification")
    with pytest.raises(ValueError, match=r"Method 'ce' applies to \['classification'\], but the task is embedding; "
                                         r"methods for embedding: \['contrastive', 'margin'"):
        create_learner("ce", task="embedding")
    with pytest.raises(ValueError, match="`margin` to be > 0, but got -1"):
        create_loss("contrastive", task="embedding", margin=-1)
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        ContrastiveLoss()(torch.randn(1, 3), torch.tensor([0]))
