"""Classification metrics."""

from __future__ import annotations

from torch import Tensor

from adaloss.metrics.base import Metric, register_metric

__all__ = ["ErrorRate", "error_rate"]


def error_rate(prediction: Tensor, target: Tensor) -> Tensor:
    """Fraction of rows whose arg-max class differs from ``target``.

    Args:
        prediction: ``(N, C)`` scores or probabilities.
        target: ``(N,)`` class indices.
    """
    return (prediction.argmax(dim=-1) != target).float().mean()


@register_metric
class ErrorRate(Metric):
    """Top-1 error rate, in [0, 1]; lower is better."""

    name = "error"
    higher_is_better = False
    task = "classification"

    def reset(self) -> None:
        self._wrong = 0
        self._total = 0

    def update(self, prediction: Tensor, target: Tensor) -> None:
        self._wrong += int((prediction.argmax(dim=-1) != target).sum())
        self._total += target.shape[0]

    def compute(self) -> float:
        if self._total == 0:
            raise RuntimeError("ErrorRate.compute() called before any update().")
        return self._wrong / self._total
