"""Evaluation metrics, each a functional twin plus an accumulating class that knows its direction."""

from __future__ import annotations

from adaloss.metrics.base import Metric, create_metric, METRICS
from adaloss.metrics.classification import ErrorRate, error_rate
from adaloss.metrics.regression import MeanSquaredError, mean_squared_error

__all__ = [
    "METRICS",
    "ErrorRate",
    "MeanSquaredError",
    "Metric",
    "create_metric",
    "error_rate",
    "mean_squared_error",
]
