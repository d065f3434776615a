"""Regression metrics."""

from __future__ import annotations

from torch import Tensor

from adaloss.metrics.base import Metric, register_metric

__all__ = ["MeanSquaredError", "mean_squared_error"]


def mean_squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean of the squared residuals over all elements; shapes must match."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"Expected `prediction` and `target` to have the same shape, but got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}."
        )
    return (prediction - target).pow(2).mean()


@register_metric
class MeanSquaredError(Metric):
    """Mean squared error over all evaluated elements; lower is better."""

    name = "mse"
    higher_is_better = False
    task = "regression"

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0

    def update(self, prediction: Tensor, target: Tensor) -> None:
        if prediction.shape != target.shape:
            raise ValueError(
                f"Expected `prediction` and `target` to have the same shape, but got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}."
            )
        self._sum += float((prediction.double() - target.double()).pow(2).sum())
        self._count += target.numel()

    def compute(self) -> float:
        if self._count == 0:
            raise RuntimeError("MeanSquaredError.compute() called before any update().")
        return self._sum / self._count
