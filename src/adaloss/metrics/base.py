"""The metric interface: accumulate over batches, compute once, and say which direction is better."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal, get_args

import torch
from torch import Tensor

from adaloss._validation import check_choice, unknown_name_error

__all__ = ["METRICS", "Metric", "MetricTask", "create_metric"]

#: What a metric evaluates: the two supervised tasks of :data:`adaloss.typing.Task`, plus
#: ``"embedding"`` (deep metric learning: ``(N, D)`` embeddings scored against ``(N,)`` labels).
MetricTask = Literal["classification", "regression", "embedding"]


class Metric(ABC):
    """A metric accumulated over evaluation batches (``update``) and read once (``compute``).

    Class attributes say what the metric needs and which way is better, so rewards, checkpoint
    selection and tables orient themselves without special cases.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    task: ClassVar[MetricTask]

    def __init__(self) -> None:
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Forget everything accumulated."""

    @abstractmethod
    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add one batch of model outputs and targets."""

    @abstractmethod
    def compute(self) -> float:
        """The metric over everything seen since the last ``reset``."""


class _WholeSetMetric(Metric):
    """A metric that needs the whole evaluated set at once: ``update`` keeps (detached) batches.

    Subclasses check a batch in :meth:`_check_batch`, may transform it in :meth:`_prepare`, and
    compute the value from the concatenated set in :meth:`_compute`.
    """

    def reset(self) -> None:
        self._predictions: list[Tensor] = []
        self._targets: list[Tensor] = []

    def _check_batch(self, prediction: Tensor, target: Tensor) -> None:
        """Raise on a malformed batch (shapes, dtypes), naming the argument."""

    def _prepare(self, prediction: Tensor) -> Tensor:
        return prediction

    def update(self, prediction: Tensor, target: Tensor) -> None:
        self._check_batch(prediction, target)
        prediction = self._prepare(prediction.detach())
        if self._predictions and prediction.shape[1:] != self._predictions[0].shape[1:]:
            raise ValueError(
                f"Expected `prediction` rows of shape {tuple(self._predictions[0].shape[1:])} like the earlier "
                f"batches, but got {tuple(prediction.shape[1:])}."
            )
        self._predictions.append(prediction)
        self._targets.append(target.detach())

    def compute(self) -> float:
        if not self._predictions:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update().")
        return self._compute(torch.cat(self._predictions), torch.cat(self._targets))

    @abstractmethod
    def _compute(self, prediction: Tensor, target: Tensor) -> float:
        """The metric on the whole set."""


METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator adding a metric to :data:`METRICS` under ``cls.name``."""
    if cls.name in METRICS:
        raise ValueError(f"A metric named {cls.name!r} is already registered.")
    METRICS[cls.name] = cls
    return cls


def create_metric(name: str, *, task: MetricTask | None = None) -> Metric:
    """Instantiate the registered metric ``name``; with ``task``, check that it fits that task."""
    if name not in METRICS:
        raise unknown_name_error("metric", name, METRICS)
    cls = METRICS[name]
    if task is not None:
        check_choice("task", task, get_args(MetricTask))
        if cls.task != task:
            fitting = sorted(n for n, c in METRICS.items() if c.task == task)
            raise ValueError(
                f"Metric {name!r} is for {cls.task}, but the task is {task}; metrics for {task}: {fitting}."
            )
    return cls()
