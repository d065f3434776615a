"""The multi-similarity peer (pytorch-metric-learning) against the paper's formula written out pair by pair."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adaloss.losses import MultiSimilarityLoss, create_loss


def naive_multi_similarity(x: torch.Tensor, y: torch.Tensor, *, alpha: float, beta: float, base: float,
                           epsilon: float | None) -> float:
    """Wang et al. 2019, eqs. 10-12, one anchor at a time in float64, averaged over every anchor."""
    e = F.normalize(x.double(), dim=1)
    s = (e @ e.T).tolist()
    n, total = len(s), 0.0
    for i in range(n):
        pos = [s[i][j] for j in range(n) if j != i and y[j] == y[i]]
        neg = [s[i][j] for j in range(n) if y[j] != y[i]]
        if epsilon is not None and pos and neg:
            keep_neg = [v for v in neg if v + epsilon > min(pos)]
            keep_pos = [v for v in pos if v - epsilon < max(neg)]
            pos, neg = keep_pos, keep_neg
        elif epsilon is not None:
            pos, neg = [], []  # mining needs both kinds of pair
        lp = math.log(1 + sum(math.exp(-alpha * (v - base)) for v in pos)) / alpha if pos else 0.0
        ln = math.log(1 + sum(math.exp(beta * (v - base)) for v in neg)) / beta if neg else 0.0
        total += lp + ln
    return total / n


@pytest.mark.parametrize("epsilon", [None, 0.1, 0.5])
def test_multi_similarity_matches_the_formula_pair_by_pair(epsilon: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g)
    y = torch.randint(0, 4, (24,), generator=g)
    for alpha, beta, base in ((2.0, 50.0, 0.5), (1.0, 10.0, 0.2)):
        loss = MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, epsilon=epsilon)
        got = float(loss(x, y))
        want = naive_multi_similarity(x, y, alpha=alpha, beta=beta, base=base, epsilon=epsilon)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_multi_similarity_gradient_is_the_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    loss = MultiSimilarityLoss(epsilon=None, beta=10.0)
    (grad,) = torch.autograd.grad(loss(x, y), x)
    h, fd = 1e-6, torch.zeros_like(x)
    for idx in range(x.numel()):
        d = torch.zeros(x.numel(), dtype=torch.float64)
        d[idx] = h
        d = d.view_as(x)
        plus = naive_multi_similarity(x.detach() + d, y, alpha=2.0, beta=10.0, base=0.5, epsilon=None)
        minus = naive_multi_similarity(x.detach() - d, y, alpha=2.0, beta=10.0, base=0.5, epsilon=None)
        fd.view(-1)[idx] = (plus - minus) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-6)


def test_multi_similarity_is_a_method_and_checks_its_options() -> None:
    from adaloss.learners import create_learner, methods_for

    assert isinstance(create_loss("multi_similarity", task="embedding", epsilon=None), MultiSimilarityLoss)
    assert "multi_similarity" in methods_for("embedding")
    # it needs an extra, so a comparison on defaults leaves it out
    assert "multi_similarity" not in methods_for("embedding", runnable_on_defaults=True)
    create_learner("multi_similarity", task="embedding", alpha=1.0)
    with pytest.raises(ValueError, match="`beta` to be > 0, but got 0"):
        MultiSimilarityLoss(beta=0)
    with pytest.raises(ValueError, match=r"`base` to be a cosine similarity in \[-1, 1\], but got 2"):
        MultiSimilarityLoss(base=2)
    with pytest.raises(TypeError, match="margin"):
        create_loss("multi_similarity", task="embedding", margin=1.0)
    assert list(MultiSimilarityLoss().state_dict()) == []


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_metric_learning.losses", None)
    with pytest.raises(ImportError, match=r"loss 'multi_similarity' needs the package 'pytorch_metric_learning\.losses'"
                                          r".*\.\[dml\]"):
        MultiSimilarityLoss()
