"""Label noise: a seeded share of a classification set's training (and validation) labels
replaced, to test robustness claims (symmetric and pair-flip noise, as in Han et al., "Co-teaching",
NeurIPS 2018, and the robust-loss papers that use their protocol)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor

from adaloss._validation import check_choice
from adaloss.data.types import DatasetSplits, TensorSplit

__all__ = ["NOISE_TYPES", "add_label_noise", "corrupt_labels"]

NOISE_TYPES = ("symmetric", "pairflip")


def corrupt_labels(
    y: Tensor, *, rate: float, num_classes: int, kind: Literal["symmetric", "pairflip"] = "symmetric",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A copy of the labels ``y`` with exactly ``round(rate · N)`` of them, chosen at random,
    replaced: ``"symmetric"`` by a class drawn uniformly among the other ``C − 1`` (never the true
    one), ``"pairflip"`` by the next class ``(y + 1) mod C``.

    Raises:
        ValueError: ``rate`` outside [0, 1), an unknown ``kind``, fewer than two classes, or labels
            outside ``[0, num_classes)``.
    """
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"Expected `label_noise` to be in [0, 1), but got {rate!r}.")
    check_choice("label_noise_type", kind, NOISE_TYPES)
    if num_classes < 2:
        raise ValueError(f"Label noise needs at least two classes, but got num_classes={num_classes}.")
    y = y.clone()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"Expected labels in [0, {num_classes}), but got labels from {int(y.min())} "
                         f"to {int(y.max())}.")
    n = round(float(rate) * len(y))
    rows = torch.randperm(len(y), generator=generator)[:n]
    if kind == "symmetric":
        shift = torch.randint(1, num_classes, (n,), generator=generator)
        y[rows] = (y[rows] + shift) % num_classes
    else:
        y[rows] = (y[rows] + 1) % num_classes
    return y


def add_label_noise(
    data: DatasetSplits, *, rate: float, kind: Literal["symmetric", "pairflip"] = "symmetric",
    valid: bool = True, seed: int = 0,
) -> DatasetSplits:
    """``data`` with noisy training labels and, when ``valid``, noisy validation labels (drawn
    after the training ones from one generator seeded with ``seed``); the test split stays clean.
    ``valid=False`` keeps a trusted, clean validation split (what a meta-objective on clean data assumes).
    """
    if data.task != "classification":
        raise ValueError(f"Label noise applies to classification, but {data.name!r} has task {data.task!r}.")
    g = torch.Generator().manual_seed(int(seed))

    def noisy(split: TensorSplit) -> TensorSplit:
        return TensorSplit(split.x, corrupt_labels(split.y, rate=rate, num_classes=data.num_outputs, kind=kind,
                                                   generator=g))

    return dataclasses.replace(data, train=noisy(data.train), valid=noisy(data.valid) if valid else data.valid)
