"""Data given as arrays: the task and labels read from targets, and the splits built from
``(x, y)`` arrays — shared by NPZ and CSV files (:mod:`adaloss.data.own`) and by data handed over in
Python (:func:`as_splits`: arrays, tensors or a torch ``Dataset``).

The protocol is the built-in tables' (:mod:`adaloss.data.protocol`): without a separate test set
a fixed 20% test split is held out (seed 0, the same rows for every ``seed``), and ``seed``
picks the validation split (``valid_fraction`` of the rest); both are stratified by class for
classification. Every feature, and a regression target, is standardised with the training
split's mean and std (a constant feature keeps std 1; ``target_scale`` keeps the target's std).

Task: the given ``task``, else inferred from the training targets: classification for integer
labels (an integer array or tensor dtype), for integral numbers with at most
:data:`MAX_INFERRED_CLASSES` distinct values, and for string labels; regression otherwise.
Labels: string labels (numpy ``str``/``bytes`` dtype, like a CSV column of class names) are
mapped to ``0..C-1`` in sorted order and kept as ``DatasetSplits.class_names``; numeric arrays and
tensors hold class indices ``0..C-1`` themselves (``C`` = the largest training label + 1).
``task="embedding"`` reads the labels as classification; the split by class is
:func:`~adaloss.data.split_for_task`'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from adaloss._validation import check_choice, check_fraction
from adaloss.data.protocol import holdout_rows, table_splits
from adaloss.data.splits import _check_seed
from adaloss.data.types import DatasetSplits
from adaloss.typing import Task

__all__ = ["MAX_INFERRED_CLASSES", "ArrayNames", "as_splits", "build_splits", "check_split_options", "from_arrays",
           "infer_task", "label_task"]

#: Inferred task: integral float targets with at most this many distinct values are class labels.
MAX_INFERRED_CLASSES = 20

Supervised = Literal["classification", "regression"]


def infer_task(y: np.ndarray) -> Supervised:
    """``"classification"`` for integer labels (integer or bool dtype, or integral numbers with
    at most :data:`MAX_INFERRED_CLASSES` distinct values), ``"regression"`` otherwise."""
    if y.dtype.kind in "biu":
        return "classification"
    if y.size and np.isfinite(y).all() and (y == np.round(y)).all() and len(np.unique(y)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def label_task(task: Task | None) -> Supervised | None:
    """What the labels are read as: the task, with the embedding task's labels read as classes."""
    if task is None:
        return None
    check_choice("task", task, ("classification", "regression", "embedding"))
    return "regression" if task == "regression" else "classification"


def build_splits(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    test: tuple[np.ndarray, np.ndarray] | None,
    *,
    task: Supervised,
    num_classes: int,
    class_names: Sequence[str],
    valid_fraction: float,
    seed: int,
    where: str,
    error: type[ValueError],
) -> DatasetSplits:
    """Check the class count, carve the splits (:func:`holdout_rows`) and standardise
    (:func:`table_splits`). ``where`` names the training targets in messages."""
    if task == "classification":
        present = np.unique(y)
        if len(present) < 2:
            shown = class_names[int(present[0])] if class_names else int(present[0])
            raise error(f"{where} holds one class only ({shown!r} in all {len(y)} rows); expected at least 2 "
                        f"classes for classification.")
    try:
        index = holdout_rows(len(y), labels=y if task == "classification" else None,
                             valid_fraction=valid_fraction, seed=seed, test=test is None)
    except ValueError as e:
        splits = "training and validation" if test is not None else "training, validation and test"
        counts = ""
        if task == "classification":
            values, sizes = np.unique(y, return_counts=True)
            counts = " (rows per class: " + ", ".join(
                f"{class_names[int(v)] if class_names else int(v)}: {n}" for v, n in zip(values, sizes)) + ")"
        raise error(f"{where} has too few rows: {len(y)}{counts}; expected enough for non-empty {splits} splits"
                    f"{', every class in each' if task == 'classification' else ''} (valid_fraction={valid_fraction:g}"
                    f"{'' if test is not None else ', test 20%'}), but: {e}") from None
    parts = {split: (x[rows], y[rows]) for split, rows in index.items()}
    if test is not None:
        parts["test"] = test
    return table_splits(name, parts, task=task, num_classes=num_classes, class_names=class_names)


def check_split_options(valid_fraction: float, seed: int) -> tuple[float, int]:
    return check_fraction("valid_fraction", valid_fraction), _check_seed(seed)



@dataclass(frozen=True)
class ArrayNames:
    """How messages name the arrays: ``origin`` (a file, or ```data```) and each array's noun."""

    origin: str
    noun: Callable[[str], str]

    def __call__(self, key: str) -> str:
        return f"{self.origin}: {self.noun(key)}"


def _first(mask: np.ndarray) -> tuple[int, ...] | int:
    where = tuple(int(i) for i in np.argwhere(mask)[0])
    return where[0] if len(where) == 1 else where


def from_arrays(
    name: str,
    arrays: Mapping[str, np.ndarray],
    *,
    task: Task | None,
    valid_fraction: float,
    seed: int,
    names: ArrayNames,
    error: type[ValueError],
) -> DatasetSplits:
    """Validate ``x``, ``y`` (and ``x_test``, ``y_test``) and build the splits."""
    noun = names.noun
    if ("x_test" in arrays) != ("y_test" in arrays):
        given, other = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise error(f"{names.origin}: {noun(given)} is given without {noun(other)}; expected both (a test set) or "
                    f"neither (a 20% test split is held out).")
    arrays, class_names = _named_labels(arrays, task=task, names=names, error=error)
    checked: dict[str, np.ndarray] = {}
    for key, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise error(f"{names(key)} has dtype {a.dtype}; expected numbers (bool, integer or float).")
        if a.ndim == 0:
            raise error(f"{names(key)} is a scalar; expected one row per example.")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            raise error(f"{names(key)} holds {a[bad].flat[0]} at index {_first(bad)}; expected finite numbers "
                        f"(drop or fill the missing values).")
        checked[key] = a
    x, y = checked["x"], checked["y"]
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    test = None
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk not in checked:
            continue
        xa = checked[xk].reshape(-1, 1) if checked[xk].ndim == 1 else checked[xk]
        ya = checked[yk]
        if ya.ndim == 2 and ya.shape[1] == 1:
            ya = ya[:, 0]
        if ya.ndim != 1:
            raise error(f"{names(yk)} has shape {checked[yk].shape}; expected one target per row of {noun(xk)}: "
                        f"shape ({len(xa)},) or ({len(xa)}, 1).")
        if len(ya) != len(xa):
            raise error(f"{names.origin}: {noun(yk)} has {len(ya)} rows, but {noun(xk)} has {len(xa)}; expected one "
                        f"target per row.")
        if len(xa) == 0:
            raise error(f"{names(xk)} has no rows; expected one row per example.")
        if xk == "x":
            x, y = xa, ya
        else:
            if xa.shape[1:] != x.shape[1:]:
                raise error(f"{names.origin}: {noun(xk)} has rows of shape {xa.shape[1:]}, but {noun('x')} has "
                            f"{x.shape[1:]}; expected the same shape.")
            test = (xa, ya)
    read_as = label_task(task) or infer_task(y)
    num_classes = 0
    if read_as == "classification":
        y = _class_indices(y, names("y"))
        num_classes = int(y.max()) + 1
        absent = np.setdiff1d(np.arange(num_classes), y)
        # C comes from the largest label: a gap is a class the model outputs but never sees (one class
        # only is an error below)
        if absent.size and absent.size < num_classes - 1:
            warnings.warn(f"{names('y')} holds class indices 0..{num_classes - 1} but no row of class(es) "
                          f"{absent[:10].tolist()}{' …' if absent.size > 10 else ''}; the model gets {num_classes} "
                          "outputs and those classes are never trained (relabel the classes 0..C-1 if that is "
                          "not intended).", stacklevel=3)
        if test is not None:
            y_test = _class_indices(test[1], names("y_test"))
            if y_test.size and y_test.max() >= num_classes:
                row = int(np.argmax(y_test >= num_classes))
                raise error(f"{names('y_test')} holds {int(y_test[row])} at row {row}, out of range: the training "
                            f"labels {noun('y')} go up to {num_classes - 1}, so expected class indices in "
                            f"0..{num_classes - 1}.")
            test = (test[0], y_test)
    else:
        y = y.astype(np.float64)
        test = None if test is None else (test[0], test[1].astype(np.float64))
    return build_splits(name, x, y, test, task=read_as, num_classes=num_classes, class_names=class_names,
                  valid_fraction=valid_fraction, seed=seed, where=names("y"), error=error)


def _named_labels(
    arrays: Mapping[str, np.ndarray], *, task: Task | None, names: ArrayNames, error: type[ValueError]
) -> tuple[Mapping[str, np.ndarray], tuple[str, ...]]:
    """String labels (a ``y`` of numpy string dtype, as a CSV target column of class names gives)
    mapped to ``0..C-1`` in sorted order, with the class names; other arrays pass unchanged."""
    y = arrays.get("y")
    y_test = arrays.get("y_test")
    strings = y is not None and y.dtype.kind in "US"
    if not strings:
        if y_test is not None and y_test.dtype.kind in "US":
            raise error(f"{names('y_test')} holds strings (dtype {y_test.dtype}), but {names.noun('y')} holds "
                        f"{y.dtype if y is not None else 'nothing'}; expected labels of one kind in both.")
        return arrays, ()
    assert y is not None
    if task == "regression":
        raise error(f"{names('y')} holds strings (dtype {y.dtype}); expected numbers for task='regression' (leave "
                    "`task` unset to read them as class names).")

    def text(a: np.ndarray) -> list[str]:
        flat = a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a
        if flat.ndim != 1:
            raise error(f"{names('y')} has shape {a.shape}; expected one label per row: shape (N,) or (N, 1).")
        return [v.decode() if isinstance(v, bytes) else str(v) for v in flat.tolist()]

    labels = text(y)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    out = dict(arrays)
    out["y"] = np.array([index[c] for c in labels], dtype=np.int64)
    if y_test is not None:
        if y_test.dtype.kind not in "US":
            raise error(f"{names('y_test')} has dtype {y_test.dtype}, but {names.noun('y')} holds strings; expected "
                        "labels of one kind in both.")
        test_labels = text(y_test)
        unknown = next((i for i, c in enumerate(test_labels) if c not in index), None)
        if unknown is not None:
            shown = ", ".join(repr(n) for n in classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise error(f"{names('y_test')} holds {test_labels[unknown]!r} at row {unknown}, a class {names.noun('y')} "
                        f"does not have; expected one of {shown}.")
        out["y_test"] = np.array([index[c] for c in test_labels], dtype=np.int64)
    return out, tuple(classes)


def _class_indices(y: np.ndarray, where: str) -> np.ndarray:
    """int64 class indices, or an error naming ``where``: non-integral or negative labels."""
    if y.dtype.kind == "f":
        fractional = y != np.round(y)
        if fractional.any():
            row = int(np.argmax(fractional))
            raise ValueError(f"{where} holds {y[row].item()!r} at row {row}; expected integer class labels for "
                             f"classification (set task=regression for a continuous target).")
    if y.size and y.min() < 0:
        row = int(np.argmin(y))
        raise ValueError(f"{where} holds {y[row].item()!r} at row {row}; expected class indices >= 0 (0..C-1).")
    return y.astype(np.int64)




_DATA_FORMS = ("a DatasetSplits, an (x, y) pair of arrays or tensors, a dict with 'x', 'y' (optionally 'x_test', "
               "'y_test'), or a map-style torch Dataset of (x, y) pairs")


def _to_numpy(value: object, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value)
        except ValueError as e:
            raise ValueError(f"{where} is a ragged list ({e}); expected an array of one row per example.") from None
    raise TypeError(f"Expected {where} to be a numpy array, a torch tensor or a list, but got {type(value).__name__}.")


def _stack_dataset(dataset: torch.utils.data.Dataset) -> dict[str, np.ndarray]:
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"Expected `data` to be {_DATA_FORMS}, but got a {type(dataset).__name__} without len() "
                        f"(an iterable-style Dataset).") from None
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"Expected `data` to be a Dataset of (x, y) pairs, but item {i} is "
                            f"{type(item).__name__}"
                            f"{'' if not isinstance(item, (tuple, list)) else f' of {len(item)}'}.")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    if not xs:
        raise ValueError(f"Expected `data` to hold examples, but the {type(dataset).__name__} is empty.")
    for key, items in (("x", xs), ("y", ys)):
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            first = tuple(items[0].shape)
            i = next(i for i, t in enumerate(items) if tuple(t.shape) != first)
            raise ValueError(f"`data` item {i} has {key} of shape {tuple(items[i].shape)}, but item 0 has {first}; "
                             f"expected the same shape for every item.")
    return {"x": _to_numpy(torch.stack(xs), "`data` x"), "y": _to_numpy(torch.stack(ys), "`data` y")}


def as_splits(
    data: object,
    *,
    task: Task | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    name: str = "data",
) -> DatasetSplits:
    """Data given in Python as :class:`~adaloss.data.DatasetSplits` — what ``adaloss.train`` and
    ``adaloss.compare`` do with their ``data=``.

    Accepted: a ``DatasetSplits`` (returned as it is); an ``(x, y)`` pair of numpy arrays, torch
    tensors or lists; a dict ``{"x", "y"}`` with optional ``"x_test"``, ``"y_test"``; a map-style
    ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs. ``x`` holds one row per
    example (any feature shape); ``y`` the class indices ``0..C-1`` or regression targets.
    Splits, task, labels and standardisation as for an NPZ file (module docstring).

    Raises:
        TypeError: another kind of ``data``.
        ValueError: naming ``data`` and the array: missing or unknown keys, mismatched shapes,
            non-finite values, float labels that are not integers, negative labels, test labels
            beyond the training classes, one class only, too few rows.
    """
    if isinstance(data, DatasetSplits):
        return data
    valid_fraction, seed = check_split_options(valid_fraction, seed)
    arrays: dict[str, np.ndarray]
    if isinstance(data, Mapping):
        allowed = ("x", "y", "x_test", "y_test")
        unknown = sorted(str(k) for k in data if k not in allowed)
        missing = [k for k in ("x", "y") if k not in data]
        if unknown or missing:
            raise ValueError(f"Expected `data` to have the keys 'x' and 'y' (optionally 'x_test', 'y_test'), but got "
                             f"the keys {sorted(str(k) for k in data)}"
                             f"{f' (unknown: {unknown})' if unknown else ''}"
                             f"{f' (missing: {missing})' if missing else ''}.")
        arrays = {k: _to_numpy(v, f"`data` {k!r}") for k, v in data.items()}
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"Expected `data` as a tuple to be an (x, y) pair, but got {len(data)} items (use a dict "
                             f"with 'x', 'y', 'x_test', 'y_test' for a test set).")
        arrays = {"x": _to_numpy(data[0], "`data` x"), "y": _to_numpy(data[1], "`data` y")}
    elif isinstance(data, torch.utils.data.Dataset):
        arrays = _stack_dataset(data)
    else:
        raise TypeError(f"Expected `data` to be {_DATA_FORMS}, but got {type(data).__name__}.")
    return from_arrays(name, arrays, task=task, valid_fraction=valid_fraction, seed=seed,
                        names=ArrayNames("`data`", lambda key: repr(key)), error=ValueError)

