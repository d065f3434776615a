"""Evaluation metrics, each a functional twin plus an accumulating class that knows its direction."""

from __future__ import annotations

from adaloss.metrics.base import METRICS, Metric, MetricTask, create_metric
from adaloss.metrics.classification import (
    AUCPR,
    BalancedAUCPR,
    BalancedError,
    ErrorRate,
    average_precision,
    balanced_error,
    error_rate,
    per_class_recall,
)
from adaloss.metrics.clustering import KMeansResult, kmeans, normalized_mutual_info
from adaloss.metrics.embedding import NMI, RecallAt1, RecallAt2, RecallAt4, RecallAt8, RecallAtK, nmi, recall_at_k
from adaloss.metrics.evaluate import Evaluation, NonFiniteOutputs, evaluate_batches
from adaloss.metrics.regression import MeanSquaredError, mean_squared_error

__all__ = [
    "evaluate_batches",
    "AUCPR",
    "BalancedAUCPR",
    "BalancedError",
    "METRICS",
    "NMI",
    "ErrorRate",
    "Evaluation",
    "KMeansResult",
    "MeanSquaredError",
    "Metric",
    "MetricTask",
    "NonFiniteOutputs",
    "RecallAt1",
    "RecallAt2",
    "RecallAt4",
    "RecallAt8",
    "RecallAtK",
    "average_precision",
    "balanced_error",
    "create_metric",
    "error_rate",
    "kmeans",
    "mean_squared_error",
    "per_class_recall",
    "nmi",
    "normalized_mutual_info",
    "recall_at_k",
]
