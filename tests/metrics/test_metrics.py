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
    with pytest.raises(ValueError, match=r"Expected `metric` to be one of \['aucpr', 'balanced_aucpr', 'balanced_error', 'error', 'mse', 'nmi', 'recall@1', .*\], but got 'acc'"):
        create_metric("acc")
    with pytest.raises(ValueError, match="Metric 'mse' is for regression, but the task is classification"):
        create_metric("mse", task="classification")
    with pytest.raises(RuntimeError, match="before any update"):
        ErrorRate().compute()


def test_balanced_error_matches_sklearn_over_batches_and_splits_per_class() -> None:
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from adaloss.metrics import BalancedError, balanced_error, per_class_recall

    g = torch.Generator().manual_seed(3)
    # an imbalanced label set with class 3 absent: sklearn averages over the classes present
    y = torch.cat([torch.zeros(60), torch.ones(25), torch.full((8,), 2), torch.full((7,), 4)]).long()
    pred = torch.randn(100, 5, generator=g)
    pred[torch.arange(100), y] += torch.rand(100, generator=g) * 2
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):  # class 3, predicted only
        expected = 1 - balanced_accuracy_score(y.numpy(), pred.argmax(1).numpy())
    m = BalancedError()
    for chunk in torch.arange(100).split(33):
        m.update(pred[chunk], y[chunk])
    assert m.compute() == pytest.approx(expected, abs=1e-12)
    assert float(balanced_error(pred, y)) == pytest.approx(expected, abs=1e-12)
    per_class = m.compute_per_class()
    assert bool(per_class[3].isnan())
    present = [0, 1, 2, 4]
    sk_recall = recall_score(y.numpy(), pred.argmax(1).numpy(), labels=present, average=None)
    assert torch.allclose(1 - per_class[present], torch.tensor(sk_recall, dtype=torch.float64))
    assert torch.allclose(per_class_recall(pred, y)[present], torch.tensor(sk_recall, dtype=torch.float64))
    assert create_metric("balanced_error").higher_is_better is False


def test_error_rate_per_class_shares_average_to_the_error() -> None:
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 4, (90,), generator=g)
    pred = torch.randn(90, 4, generator=g)
    m = ErrorRate()
    m.update(pred[:50], y[:50])
    m.update(pred[50:], y[50:])
    shares = m.compute_per_class()
    wrong = pred.argmax(1) != y
    assert shares.mean().item() == pytest.approx(1 - accuracy_score(y.numpy(), pred.argmax(1).numpy()))
    for c in range(4):  # hand count: class c's misclassified rows, times C / N
        assert shares[c].item() == pytest.approx(4 * int((wrong & (y == c)).sum()) / 90)


def test_aucpr_per_class_matches_sklearn_one_vs_rest() -> None:
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 4, (80,), generator=g)
    pred = torch.randn(80, 4, generator=g)
    m = create_metric("aucpr")
    m.update(pred, y)
    per_class = m.compute_per_class()
    probs = torch.softmax(pred.double(), 1).numpy()
    for c in range(4):
        assert per_class[c].item() == pytest.approx(average_precision_score((y == c).numpy(), probs[:, c]))
    assert per_class.mean().item() == pytest.approx(m.compute())


@pytest.mark.parametrize("ties", [False, True])
def test_balanced_aucpr_matches_sklearn_with_inverse_frequency_weights(ties: bool) -> None:
    from sklearn.metrics import average_precision_score

    from adaloss.metrics import BalancedAUCPR, average_precision

    g = torch.Generator().manual_seed(6)
    # imbalanced: class 3 is rare
    y = torch.cat([torch.randint(0, 3, (150,), generator=g), torch.full((9,), 3)])
    logits = torch.randn(159, 4, generator=g)
    if ties:  # scores given as they are (no softmax), rounded so that tied scores share a threshold
        scores, from_logits = (torch.rand(159, 4, generator=g) * 8).round() / 8, False
        probs = scores.double().numpy()
    else:
        scores, from_logits = logits, True
        probs = torch.softmax(logits.double(), 1).numpy()
    w = (1.0 / torch.bincount(y)[y].double()).numpy()
    onehot = torch.nn.functional.one_hot(y, 4).numpy()
    expected = average_precision_score(onehot, probs, average="macro", sample_weight=w)
    m = BalancedAUCPR(from_logits=from_logits)
    m.update(scores[:100], y[:100])
    m.update(scores[100:], y[100:])
    assert m.compute() == pytest.approx(expected, rel=1e-12)
    assert average_precision(scores, y, from_logits=from_logits, class_balanced=True).item() == pytest.approx(
        expected, rel=1e-12)
    plain = average_precision_score(onehot, probs, average="macro")
    assert abs(expected - plain) > 1e-3  # the weighting matters on this split
    assert average_precision(scores, y, from_logits=from_logits).item() == pytest.approx(plain, rel=1e-12)


def test_balanced_aucpr_equals_aucpr_on_a_balanced_split() -> None:
    g = torch.Generator().manual_seed(7)
    y = torch.arange(5).repeat(20)
    pred = torch.randn(100, 5, generator=g)
    a, b = create_metric("aucpr"), create_metric("balanced_aucpr")
    a.update(pred, y)
    b.update(pred, y)
    assert b.compute() == pytest.approx(a.compute(), rel=1e-12)
    assert b.higher_is_better
