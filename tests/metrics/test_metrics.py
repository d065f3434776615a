from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score
from sklearn.metrics import mean_squared_error as sk_mse

from adaloss.metrics import ErrorRate, MeanSquaredError, create_metric, error_rate, mean_squared_error


def test_error_rate_matches_sklearn_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(257, 7, generator=g)
    target = torch.randint(0, 7, (257,), generator=g)
    m = ErrorRate()
    for s in range(0, 257, 50):
        m.update(scores[s : s + 50], target[s : s + 50])
    expected = 1 - accuracy_score(target.numpy(), scores.argmax(1).numpy())
    assert m.compute() == pytest.approx(expected)
    assert error_rate(scores, target).item() == pytest.approx(expected)
    assert not ErrorRate.higher_is_better


def test_mse_matches_sklearn_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(101, 1, generator=g)
    target = torch.randn(101, 1, generator=g)
    m = MeanSquaredError()
    m.update(pred[:60], target[:60])
    m.update(pred[60:], target[60:])
    expected = sk_mse(target.numpy(), pred.numpy())
    assert m.compute() == pytest.approx(expected, rel=1e-6)
    assert mean_squared_error(pred, target).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"same shape, but got \(101, 1\) and \(101,\)"):
        m.update(pred, target.squeeze(1))


def test_create_metric_checks_name_and_task() -> None:
    with pytest.raises(ValueError, match=r"Expected `metric` to be one of \['aucpr', 'error', 'mse', 'nmi', 'recall@1', .*\], but got 'acc'"):
        create_metric("acc")
    with pytest.raises(ValueError, match="Metric 'mse' is for regression, but the task is classification"):
        create_metric("mse", task="classification")
    with pytest.raises(RuntimeError, match="before any update"):
        ErrorRate().compute()
