"""The in-memory form of a dataset: its splits as tensors, and what a model and loader need to know."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from adaloss.typing import Task

__all__ = ["DatasetSplits", "TensorSplit"]


@dataclass(frozen=True)
class TensorSplit:
    """One split held in memory.

    Attributes:
        x: float32 features: images ``(N, C, H, W)`` or tables ``(N, D)``.
        y: int64 ``(N,)`` class labels, or float32 ``(N, 1)`` regression targets.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"TensorSplit needs as many targets as inputs, got {self.x.shape[0]} and {self.y.shape[0]}."
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's train/valid/test splits plus what a model and loader need to know.

    Attributes:
        name: Registered dataset name (own data: the file's name, or what the caller named it).
        task: ``"classification"``, ``"regression"`` or ``"embedding"`` (:func:`split_by_class`).
        train: Training split (what remains after carving out the validation split).
        valid: Validation split.
        test: Test split.
        input_shape: Per-sample input shape, e.g. ``(1, 28, 28)`` or ``(8,)``.
        num_outputs: Number of classes, 1 for regression, the embedding dimension for embedding.
        augment: Augmentation the training loader should apply.
        target_scale: Regression: std of the raw training targets (multiply a standardised error
            by it, or an MSE by its square, for original units); 1.0 for classification.
        train_classes: Embedding: the classes of the train and valid splits, ascending (the test
            split holds the others, with their original labels); empty for the other tasks.
        minority_classes: the classes :func:`subsample_classes` thinned (empty: none).
        class_names: classification data read from a file with named classes (a CSV target
            column): the original value of each label, ``class_names[label]``; empty otherwise.
    """

    name: str
    task: Task
    train: TensorSplit
    valid: TensorSplit
    test: TensorSplit
    input_shape: tuple[int, ...]
    num_outputs: int
    augment: Literal["none", "crop_flip"] = "none"
    target_scale: float = 1.0
    train_classes: tuple[int, ...] = ()
    minority_classes: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
