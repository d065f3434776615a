"""The metric interface: accumulate over batches, compute once, and say which direction is better."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

from adaloss._validation import unknown_name_error
from adaloss.typing import Task

__all__ = ["METRICS", "Metric", "create_metric"]


class Metric(ABC):
    """A metric accumulated over evaluation batches (``update``) and read once (``compute``).

    Class attributes say what the metric needs and which way is better, so rewards, checkpoint
    selection and tables orient themselves without special cases.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    task: ClassVar[Task]

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


METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator adding a metric to :data:`METRICS` under ``cls.name``."""
    if cls.name in METRICS:
        raise ValueError(f"A metric named {cls.name!r} is already registered.")
    METRICS[cls.name] = cls
    return cls


def create_metric(name: str, *, task: Task | None = None) -> Metric:
    """Instantiate the registered metric ``name``; with ``task``, check that it fits that task."""
    if name not in METRICS:
        raise unknown_name_error("metric", name, METRICS)
    cls = METRICS[name]
    if task is not None and cls.task != task:
        fitting = sorted(n for n, c in METRICS.items() if c.task == task)
        raise ValueError(f"Metric {name!r} is for {cls.task}, but the task is {task}; metrics for {task}: {fitting}.")
    return cls()
