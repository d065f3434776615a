"""Evaluating a model on a split: the metrics a run reports when its config names none."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adaloss.data.loader import iterate_batches
from adaloss.data.types import TensorSplit
from adaloss.metrics import Metric, evaluate_batches
from adaloss.typing import Device

__all__ = ["DEFAULT_METRICS", "evaluate"]


#: metrics evaluated when the config names none; embedding: retrieval on the held-out classes
#: (Recall@1/2/4/8) and NMI of a k-means clustering (Huang et al., ICML 2019, Sec. 5)
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("error",),
    "regression": ("mse",),
    "embedding": ("recall@1", "recall@2", "recall@4", "recall@8", "nmi"),
}


def evaluate(
    model: nn.Module,
    split: TensorSplit,
    metrics: Sequence[Metric],
    *,
    batch_size: int = 1000,
    device: Device = "cpu",
) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` in eval mode (no dropout, BatchNorm running statistics).

    The model's train/eval mode is restored afterwards.
    """
    return evaluate_batches(model, iterate_batches(split, batch_size=batch_size, device=device), metrics).values
