"""The split protocol shared by every dataset, built-in or your own.

* The validation split is a seeded ``valid_fraction`` of the training data (stratified by class
  for classification); ``seed`` selects it, and the same seed always gives the same split.
* Sets without an official test split (``digits``, the regression tables, your own files without
  a test file) hold out a fixed 20% test split (seed 0, stratified for classification) that does
  **not** depend on ``seed``, so runs with different seeds are scored on the same test samples.
* Every statistic used for normalisation (image means where not fixed, feature and target
  means/stds, imputation medians) comes from the training split only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from adaloss.data.splits import random_split, stratified_split
from adaloss.data.types import DatasetSplits, TensorSplit

__all__ = ["TEST_FRACTION", "TEST_SPLIT_SEED", "holdout_rows", "moments", "table_splits"]

#: Share and seed of the fixed test split carved from sets that have no official one.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
#: Embedding dimension of the metric-learning task when none is given.



def moments(x: np.ndarray, *, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and std of ``x`` over ``axis``; a constant feature keeps std 1."""
    mean = x.mean(axis=axis, dtype=np.float64)
    std = x.std(axis=axis, dtype=np.float64)
    std[std == 0] = 1.0
    return mean, std


def holdout_rows(
    num_rows: int, *, labels: np.ndarray | None, valid_fraction: float, seed: int, test: bool = True
) -> dict[str, np.ndarray]:
    """Row indices of the splits of data that has no official test split.

    ``test=True``: a fixed ``TEST_FRACTION`` test split (seed ``TEST_SPLIT_SEED``, the same for
    every ``seed``), then the seeded ``valid_fraction`` of the rest as the validation split;
    ``test=False`` (the test rows come from elsewhere): only the validation split. Stratified by
    ``labels`` when given (classification), plain random otherwise.

    Returns:
        ``{"train": ..., "valid": ...[, "test": ...]}``: sorted index arrays into ``range(num_rows)``.
    """

    def split(rows: np.ndarray, fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
        if labels is None:
            keep, held = random_split(len(rows), fraction=fraction, seed=split_seed)
        else:
            keep, held = stratified_split(labels[rows], fraction=fraction, seed=split_seed)
        return rows[keep], rows[held]

    rest, test_rows = np.arange(num_rows), None
    if test:
        rest, test_rows = split(rest, TEST_FRACTION, TEST_SPLIT_SEED)
    train, valid = split(rest, valid_fraction, seed)
    index = {"train": train, "valid": valid}
    return index if test_rows is None else {**index, "test": test_rows}


def table_splits(
    name: str,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    task: Literal["classification", "regression"],
    num_classes: int = 0,
    class_names: Sequence[str] = (),
) -> DatasetSplits:
    """``DatasetSplits`` from numeric ``(x, y)`` arrays per split (``train``, ``valid``, ``test``).

    Every feature (each position of ``x.shape[1:]``) is standardised with the training split's
    mean and std (a constant feature keeps std 1); regression targets likewise, with their std
    kept as ``target_scale``; class labels become int64 (``num_classes`` of them).
    """
    x_mean, x_std = moments(parts["train"][0], axis=0)
    splits = {}
    if task == "regression":
        y_train = parts["train"][1]
        y_mean, y_std = float(y_train.mean()), float(y_train.std())
        y_std = y_std if y_std > 0 else 1.0
    for split, (x, y) in parts.items():
        x_out = torch.from_numpy(((x - x_mean) / x_std).astype(np.float32))
        if task == "regression":
            y_out = torch.from_numpy(((y - y_mean) / y_std).astype(np.float32).reshape(-1, 1))
        else:
            y_out = torch.from_numpy(np.asarray(y, dtype=np.int64).reshape(-1))
        splits[split] = TensorSplit(x_out, y_out)
    return DatasetSplits(
        name=name,
        task=task,
        input_shape=tuple(int(d) for d in parts["train"][0].shape[1:]),
        num_outputs=1 if task == "regression" else num_classes,
        target_scale=y_std if task == "regression" else 1.0,
        class_names=tuple(class_names),
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
    )
