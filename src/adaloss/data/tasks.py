"""A dataset's splits for a task: the metric-learning (``"embedding"``) split by class and the
imbalanced variant that thins some classes.

The metric-learning task of a classification set splits it *by class* (:func:`split_by_class`;
Huang et al., "Addressing the Loss-Metric Mismatch with Adaptive Loss Alignment", ICML 2019,
Sec. 5): training and validation keep the training classes, the test split keeps only the
held-out classes, which the model never sees; it is the retrieval set.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from adaloss._validation import check_choice, check_int
from adaloss.data.types import DatasetSplits, TensorSplit
from adaloss.typing import Task

__all__ = ["DEFAULT_EMBEDDING_DIM", "TaskOptionError", "check_train_classes", "split_by_class", "split_for_task",
           "subsample_classes"]

DEFAULT_EMBEDDING_DIM = 64



def _subset(split: TensorSplit, keep: torch.Tensor) -> TensorSplit:
    idx = keep.nonzero().squeeze(1)
    return TensorSplit(split.x.index_select(0, idx), split.y.index_select(0, idx))


def check_train_classes(train_classes: Sequence[int] | None, num_classes: int) -> tuple[int, ...]:
    """The training classes of a class split, ascending; ``None`` gives the first half.

    Raises a ``ValueError`` naming ``train_classes``, what is allowed and what was received
    unless they are at least 2 distinct classes in ``0..num_classes−1`` that leave at least 2
    held-out classes (pairs need negatives; retrieval and NMI need more than one class).
    """
    if train_classes is None:
        return tuple(range(num_classes // 2))
    allowed = (f"at least 2 distinct class labels in 0..{num_classes - 1} leaving at least 2 of the "
               f"{num_classes} classes held out")
    if isinstance(train_classes, (str, bytes)) or not isinstance(train_classes, Sequence):
        raise TypeError(f"Expected `train_classes` to be a list of {allowed}, but got {train_classes!r}.")
    bad = [c for c in train_classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes]
    classes = sorted(set(train_classes))
    if bad or len(classes) != len(train_classes) or not 2 <= len(classes) <= num_classes - 2:
        raise ValueError(f"Expected `train_classes` to be {allowed}, but got {list(train_classes)!r}.")
    return tuple(classes)


def split_by_class(
    data: DatasetSplits,
    *,
    train_classes: Sequence[int] | None = None,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
) -> DatasetSplits:
    """The metric-learning (``"embedding"``) task of a classification dataset (Huang et al., ICML 2019, metric
    learning; reconstructed).

    The standard protocol of deep metric learning: the model is trained on some classes and
    evaluated by retrieval on classes it has never seen. ``train`` and ``valid`` keep the rows
    of ``train_classes`` (default: the first half of the classes, 0–4 of MNIST, Fashion-MNIST
    and digits) — so the validation split is the usual seeded, stratified share of the training
    data of those classes; ``test`` keeps the official test rows of the other classes (5–9).
    Labels keep their original values; the training rows of the held-out classes are unused.

    Args:
        data: a classification dataset's splits, as :func:`load_dataset` returns them.
        train_classes: the training classes (see :func:`check_train_classes`).
        embedding_dim: the embedding dimension (the model's ``num_outputs``).
    """
    if data.task != "classification":
        raise ValueError(f"The embedding task splits a classification dataset by class, but {data.name!r} has task "
                         f"{data.task!r}.")
    classes = check_train_classes(train_classes, data.num_outputs)
    embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
    chosen = torch.zeros(data.num_outputs, dtype=torch.bool)
    chosen[list(classes)] = True
    return dataclasses.replace(
        data,
        task="embedding",
        train=_subset(data.train, chosen[data.train.y]),
        valid=_subset(data.valid, chosen[data.valid.y]),
        test=_subset(data.test, ~chosen[data.test.y]),
        num_outputs=embedding_dim,
        train_classes=classes,
    )


def subsample_classes(
    data: DatasetSplits, *, classes: Sequence[int], fraction: float = 0.1, seed: int = 0
) -> DatasetSplits:
    """An imbalanced variant of a classification dataset: ``classes`` keep ``fraction`` of their
    training and validation rows (at least one each; a seeded random choice per class and split),
    every other class keeps all; the test split stays as it is, so a metric such as macro AUCPR
    scores every class on the same footing (ALA issue: "a few classes subsampled to 10%").
    """
    if data.minority_classes:
        raise ValueError(f"{data.name!r} is already subsampled (classes {list(data.minority_classes)}).")
    if data.task != "classification":
        raise ValueError(f"Subsampling classes applies to classification, but {data.name!r} has task {data.task!r}.")
    classes = list(classes)
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < data.num_outputs]
    if bad or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"Expected `minority_classes` to be distinct class labels in [0, {data.num_outputs}), "
                         f"but got {classes!r}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Expected `minority_fraction` to be in (0, 1], but got {fraction!r}.")
    g = torch.Generator().manual_seed(int(seed))

    def thin(split: TensorSplit) -> TensorSplit:
        keep = torch.ones(len(split), dtype=torch.bool)
        for c in sorted(classes):  # the same rows whatever order the classes are named in
            rows = torch.nonzero(split.y == c).squeeze(1)
            if len(rows) == 0:
                continue
            n = max(1, math.ceil(fraction * len(rows)))
            keep[rows] = False
            keep[rows[torch.randperm(len(rows), generator=g)[:n]]] = True
        return _subset(split, keep)

    return dataclasses.replace(data, train=thin(data.train), valid=thin(data.valid),
                               minority_classes=tuple(sorted(classes)))


class TaskOptionError(ValueError):
    """A task option that does not fit the dataset; :attr:`key` names the option (``task``,
    ``train_classes``, ``embedding_dim``, ``minority_classes``), so callers can name it as theirs
    (the trainer's config keys have the same names)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def split_for_task(
    data: DatasetSplits,
    *,
    task: Task | None = None,
    train_classes: Sequence[int] | None = None,
    embedding_dim: int | None = None,
    minority_classes: Sequence[int] | None = None,
    minority_fraction: float | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """The splits of ``task`` made from a dataset's own splits ``data`` — the one implementation
    behind :func:`load_dataset`'s ``task`` and the trainer's config keys of the same names.

    ``minority_classes`` first thins those classes of a classification set
    (:func:`subsample_classes` with ``minority_fraction``, default 0.1, and ``seed``; splits that
    are already thinned that way are kept). Then ``task``: ``None`` or the dataset's own task keep
    the splits; ``"embedding"`` on a classification set splits it by class
    (:func:`split_by_class` with ``train_classes`` and ``embedding_dim``); splits already split
    by class are checked against them and kept.

    Raises:
        TaskOptionError: an option that does not fit the dataset or the task; its ``key`` names it.
        TypeError: ``train_classes`` that is not a list.
    """
    if minority_classes is not None and tuple(sorted(minority_classes)) != data.minority_classes:
        fraction = 0.1 if minority_fraction is None else minority_fraction
        try:
            data = subsample_classes(data, classes=minority_classes, fraction=fraction, seed=seed)
        except ValueError as e:
            raise TaskOptionError("minority_classes", str(e)) from None
    if task is not None:
        try:
            check_choice("task", task, ("classification", "regression", "embedding"))
        except ValueError as e:
            raise TaskOptionError("task", str(e)) from None
    if task != "embedding":
        for key, value in (("train_classes", train_classes), ("embedding_dim", embedding_dim)):
            if value is not None:
                raise TaskOptionError(key, f"`{key}` applies to task='embedding' only, but got task={task!r}.")
    if task is None or (task == data.task and task != "embedding"):
        return data
    dim = DEFAULT_EMBEDDING_DIM if embedding_dim is None else embedding_dim
    if task == "embedding" and data.task == "classification":
        try:
            check_train_classes(train_classes, data.num_outputs)
        except ValueError as e:
            raise TaskOptionError("train_classes", str(e)) from None
        try:
            return split_by_class(data, train_classes=train_classes, embedding_dim=dim)
        except ValueError as e:
            raise TaskOptionError("embedding_dim", str(e)) from None
    if task == "embedding" and data.task == "embedding":
        wanted = None if train_classes is None else tuple(sorted(train_classes))
        if (wanted is not None and wanted != data.train_classes) or dim != data.num_outputs:
            raise TaskOptionError(
                "train_classes" if wanted is not None and wanted != data.train_classes else "embedding_dim",
                f"The splits of {data.name!r} are already split by class with train_classes="
                f"{list(data.train_classes)} and embedding_dim={data.num_outputs}, but the task asks for "
                f"train_classes={None if train_classes is None else list(train_classes)!r} and embedding_dim={dim}.")
        return data
    allowed = [data.task, "embedding"] if data.task == "classification" else [data.task]
    raise TaskOptionError("task", f"Expected `task` for dataset {data.name!r} to be one of {allowed}, "
                                  f"but got {task!r}.")
