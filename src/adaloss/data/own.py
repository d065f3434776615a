"""Users' own data as :class:`~adaloss.data.DatasetSplits`: CSV tables, NPZ arrays, and arrays,
tensors or a torch ``Dataset`` handed over in Python (``adaloss.train(config, data=...)``).

The protocol is the built-in tables' (:mod:`adaloss.data.datasets`): without a separate test set
a fixed 20% test split is held out (seed 0, the same rows for every ``seed``), and ``seed``
picks the validation split (``valid_fraction`` of the rest); both are stratified by class for
classification. Every feature, and a regression target, is standardised with the training
split's mean and std (a constant feature keeps std 1; ``target_scale`` keeps the target's std).

Task: the given ``task``, else inferred from the training targets: classification for integer
labels (an integer array or tensor dtype), for integral numbers with at most
:data:`MAX_INFERRED_CLASSES` distinct values, and for a CSV target column that is not numeric
(class names); regression otherwise. Labels: a CSV target column's distinct values are mapped to
``0..C-1`` in sorted order (numbers numerically) and kept as ``DatasetSplits.class_names``, and
so are string labels in an array (numpy ``str``/``bytes`` dtype, e.g. an NPZ ``y``); numeric arrays
and tensors hold class indices ``0..C-1`` themselves (``C`` = the largest training label + 1). ``task="embedding"`` reads the labels as classification; the split by class is
:func:`~adaloss.data.split_for_task`'s.

Every error names the file (or ``data``), the column or array, what was expected and what was
found: :class:`~adaloss.data.DataFormatError` for a file's content, ``FileNotFoundError`` for a
missing file, ``ValueError``/``TypeError`` for data given in Python.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from adaloss._validation import check_choice, check_fraction
from adaloss.data.datasets import DatasetSplits, holdout_rows, table_splits
from adaloss.data.formats import DataFormatError
from adaloss.data.splits import _check_seed
from adaloss.typing import Task

__all__ = [
    "MAX_INFERRED_CLASSES",
    "OWN_FORMATS",
    "as_splits",
    "check_own_options",
    "infer_task",
    "load_csv",
    "load_npz",
    "load_own",
]

#: ``dataset=`` names of file formats read from ``data_path``.
OWN_FORMATS: tuple[str, ...] = ("csv", "npz")
#: Inferred task: integral float targets with at most this many distinct values are class labels.
MAX_INFERRED_CLASSES = 20
#: CSV cells read as a missing value (compared in lower case).
MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})

_Supervised = Literal["classification", "regression"]


# ---------------------------------------------------------------------------------------------
# Shared: task, labels, splits
# ---------------------------------------------------------------------------------------------


def infer_task(y: np.ndarray) -> _Supervised:
    """``"classification"`` for integer labels (integer or bool dtype, or integral numbers with
    at most :data:`MAX_INFERRED_CLASSES` distinct values), ``"regression"`` otherwise."""
    if y.dtype.kind in "biu":
        return "classification"
    if y.size and np.isfinite(y).all() and (y == np.round(y)).all() and len(np.unique(y)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def _label_task(task: Task | None) -> _Supervised | None:
    """What the labels are read as: the task, with the embedding task's labels read as classes."""
    if task is None:
        return None
    check_choice("task", task, ("classification", "regression", "embedding"))
    return "regression" if task == "regression" else "classification"


def _build(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    test: tuple[np.ndarray, np.ndarray] | None,
    *,
    task: _Supervised,
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


def _check_common(valid_fraction: float, seed: int) -> tuple[float, int]:
    return check_fraction("valid_fraction", valid_fraction), _check_seed(seed)


# ---------------------------------------------------------------------------------------------
# Arrays: NPZ files and data given in Python
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Names:
    """How messages name the arrays: ``origin`` (a file, or ```data```) and each array's noun."""

    origin: str
    noun: Callable[[str], str]

    def __call__(self, key: str) -> str:
        return f"{self.origin}: {self.noun(key)}"


def _first(mask: np.ndarray) -> tuple[int, ...] | int:
    where = tuple(int(i) for i in np.argwhere(mask)[0])
    return where[0] if len(where) == 1 else where


def _from_arrays(
    name: str,
    arrays: Mapping[str, np.ndarray],
    *,
    task: Task | None,
    valid_fraction: float,
    seed: int,
    names: _Names,
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
    label_task = _label_task(task) or infer_task(y)
    num_classes = 0
    if label_task == "classification":
        y = _class_indices(y, names("y"))
        num_classes = int(y.max()) + 1
        absent = np.setdiff1d(np.arange(num_classes), y)
        if absent.size and absent.size < num_classes - 1:  # (one class only is an error below) C comes from the largest label: a gap is a class the model outputs but never sees
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
    return _build(name, x, y, test, task=label_task, num_classes=num_classes, class_names=class_names,
                  valid_fraction=valid_fraction, seed=seed, where=names("y"), error=error)


def _named_labels(
    arrays: Mapping[str, np.ndarray], *, task: Task | None, names: _Names, error: type[ValueError]
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


def load_npz(
    data_path: str | os.PathLike[str], *, task: Task | None = None, valid_fraction: float = 0.1, seed: int = 0
) -> DatasetSplits:
    """Splits from an NPZ archive (``numpy.savez``) with arrays ``x`` (one row per example, any
    feature shape), ``y`` (labels or targets, ``(N,)`` or ``(N, 1)``) and optionally ``x_test``,
    ``y_test`` (a test set; without them a fixed 20% test split is held out). Read with
    ``allow_pickle=False``. See the module docstring for the task, labels and standardisation.

    Raises:
        FileNotFoundError: no file at ``data_path``.
        DataFormatError: not an NPZ archive, a missing array, mismatched shapes, non-finite
            values, labels that are not class indices, one class only, too few rows.
    """
    valid_fraction, seed = _check_common(valid_fraction, seed)
    path = _existing_file(data_path, "data_path", "an NPZ archive (numpy.savez) with arrays 'x' and 'y'")
    names = _Names(str(path), lambda key: f"array {key!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"{path}: not a readable NPZ archive ({e}); expected one written by numpy.savez with "
                              f"arrays 'x' and 'y'.") from None
    if isinstance(archive, np.ndarray):
        raise DataFormatError(f"{path}: a single .npy array of shape {archive.shape}; expected an NPZ archive "
                              f"(numpy.savez) with arrays 'x' and 'y'.")
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise DataFormatError(f"{path}: no array {missing[0]!r}; expected arrays 'x' and 'y' (and optionally "
                                  f"'x_test', 'y_test'), but found {sorted(archive.files)}.")
        arrays = {}
        for key in ("x", "y", "x_test", "y_test"):
            if key in archive.files:
                try:
                    arrays[key] = archive[key]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                    raise DataFormatError(f"{names(key)} cannot be read ({e}); expected a numeric array.") from None
    try:
        return _from_arrays(path.name, arrays, task=task, valid_fraction=valid_fraction, seed=seed, names=names,
                            error=DataFormatError)
    except DataFormatError:
        raise
    except ValueError as e:  # the label checks shared with data given in Python
        raise DataFormatError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # the file line of each row, for messages

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [row[i] for row in self.rows]


def _existing_file(path: str | os.PathLike[str], key: str, expected: str) -> Path:
    p = Path(path)
    if not p.is_file():
        state = "is a folder" if p.is_dir() else "does not exist"
        raise FileNotFoundError(f"Expected `{key}` to be {expected}, but {str(p)!r} {state} (working directory "
                                f"{os.getcwd()}).")
    return p


def _read_table(path: str | os.PathLike[str], key: str) -> _Table:
    p = _existing_file(path, key, "a CSV file with a header row")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{p}: not a UTF-8 text file ({e}); expected a CSV table.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank line
            cells = [c.strip() for c in cells]
            if header is None:
                header = cells
                continue
            if len(cells) != len(header):
                raise DataFormatError(f"{p}: line {reader.line_num} has {len(cells)} cells; expected {len(header)}, "
                                      f"one per header column {header}.")
            rows.append(cells)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataFormatError(f"{p}: line {reader.line_num} is not valid CSV ({e}).") from None
    if header is None:
        raise DataFormatError(f"{p}: the file is empty; expected a header row naming the columns, then one row per "
                              f"example.")
    unnamed = [i + 1 for i, h in enumerate(header) if not h]
    if unnamed:
        raise DataFormatError(f"{p}: header column {unnamed[0]} has no name; expected a name for every column, but "
                              f"found the header {header}.")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataFormatError(f"{p}: the header names column {repeated[0]!r} more than once; expected distinct "
                              f"column names.")
    if not rows:
        raise DataFormatError(f"{p}: too few rows: the file has a header but no data rows; expected one row per "
                              f"example.")
    return _Table(p, header, rows, lines)


def _numbers(table: _Table, column: str, role: str) -> np.ndarray:
    """The float64 values of a column, or an error naming file, column, line and cell."""
    cells = table.column(column)
    try:
        values = np.array(cells, dtype=str).astype(np.float64)
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    out = []
    for cell, line in zip(cells, table.lines):  # the slow path finds the first bad cell
        if cell.lower() in MISSING_MARKERS:
            raise DataFormatError(f"{table.path}: {role} column {column!r} has a missing value at line {line} "
                                  f"({cell!r}); expected a number in every row (drop or fill the row).")
        try:
            value = float(cell)
        except ValueError:
            hint = " (drop the column, or encode it as numbers)" if role == "feature" else ""
            raise DataFormatError(f"{table.path}: {role} column {column!r} is not numeric: line {line} holds "
                                  f"{cell!r}; expected a number in every row{hint}.") from None
        if not math.isfinite(value):
            raise DataFormatError(f"{table.path}: {role} column {column!r} holds {cell!r} at line {line}; expected a "
                                  f"finite number.")
        out.append(value)
    return np.array(out, dtype=np.float64)  # numpy's parser refused what Python's float reads


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _class_name(value: float) -> str:
    return str(int(value)) if value == round(value) else repr(value)


def _check_target_cells(table: _Table, target: str) -> list[str]:
    cells = table.column(target)
    for cell, line in zip(cells, table.lines):
        if cell.lower() in MISSING_MARKERS:
            raise DataFormatError(f"{table.path}: target column {target!r} has a missing value at line {line} "
                                  f"({cell!r}); expected a label or number in every row (drop or fill the row).")
    return cells


def _csv_targets(
    table: _Table, target: str, test: _Table | None, task: _Supervised | None
) -> tuple[_Supervised, np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """The task, the training and test targets (labels 0..C-1 or floats) and the class names."""
    cells = _check_target_cells(table, target)
    test_cells = None if test is None else _check_target_cells(test, target)
    numeric = all(_is_number(c) for c in cells)
    if task is None:
        task = infer_task(_numbers(table, target, "target")) if numeric else "classification"
    if task == "regression":
        if not numeric:
            line, cell = next((ln, c) for c, ln in zip(cells, table.lines) if not _is_number(c))
            raise DataFormatError(f"{table.path}: target column {target!r} is not numeric: line {line} holds {cell!r}; "
                                  f"expected numbers for task='regression' (leave `task` unset to read the values as "
                                  f"class names).")
        y = _numbers(table, target, "target")
        return task, y, None if test is None else _numbers(test, target, "target"), ()
    # classification: sorted distinct values (numbers numerically) -> 0..C-1
    if numeric:
        values = _numbers(table, target, "target")
        classes = sorted(set(values.tolist()))
        names = tuple(_class_name(v) for v in classes)
        keys: list[Any] = list(values.tolist())
    else:
        classes = sorted(set(cells))
        names = tuple(classes)
        keys = cells
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[k] for k in keys], dtype=np.int64)
    y_test = None
    if test is not None and test_cells is not None:
        labels = []
        for cell, line in zip(test_cells, test.lines):
            key: Any = float(cell) if numeric and _is_number(cell) else cell
            if key not in index:
                shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
                raise DataFormatError(f"{test.path}: target column {target!r} holds {cell!r} at line {line}, a class "
                                      f"the training file {table.path} does not have; expected one of {shown}.")
            labels.append(index[key])
        y_test = np.array(labels, dtype=np.int64)
    return task, y, y_test, names


def load_csv(
    data_path: str | os.PathLike[str],
    *,
    target: str,
    test_path: str | os.PathLike[str] | None = None,
    task: Task | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetSplits:
    """Splits from a CSV table with a header row: ``target`` names the target column, every
    other column is a numeric feature. ``test_path``: a CSV file with the same columns as the
    test set (without it a fixed 20% test split is held out). See the module docstring for the
    task, labels (``class_names``) and standardisation.

    Raises:
        FileNotFoundError: no file at ``data_path`` or ``test_path``.
        DataFormatError: naming the file, column and line: no ``target`` column, missing (empty,
            NaN, NA, ?) or non-finite cells, a feature column that is not numeric, a test file
            with other columns or with classes the training file lacks, one class only, too few
            rows.
    """
    valid_fraction, seed = _check_common(valid_fraction, seed)
    if not isinstance(target, str):
        raise TypeError(f"Expected `target` to be the name of the target column, but got {target!r}.")
    if not target:
        raise ValueError("Expected `target` to be the name of the target column, but got an empty name.")
    label_task = _label_task(task)
    table = _read_table(data_path, "data_path")
    if target not in table.header:
        raise DataFormatError(f"{table.path}: no target column {target!r} (`target`); expected one of the header's "
                              f"columns {table.header}.")
    features = [h for h in table.header if h != target]
    if not features:
        raise DataFormatError(f"{table.path}: only the target column {target!r}; expected at least one feature "
                              f"column beside it.")
    test = None
    if test_path is not None:
        test = _read_table(test_path, "test_path")
        if sorted(test.header) != sorted(table.header):
            raise DataFormatError(f"{test.path}: columns {test.header} differ from the training file's "
                                  f"{table.header} ({table.path}); expected the same columns (in any order).")
    x = np.stack([_numbers(table, c, "feature") for c in features], axis=1)
    x_test = None if test is None else np.stack([_numbers(test, c, "feature") for c in features], axis=1)
    task_, y, y_test, names = _csv_targets(table, target, test, label_task)
    return _build(
        table.path.name, x, y, None if x_test is None or y_test is None else (x_test, y_test),
        task=task_, num_classes=len(names), class_names=names, valid_fraction=valid_fraction, seed=seed,
        where=f"{table.path}: target column {target!r}", error=DataFormatError,
    )


# ---------------------------------------------------------------------------------------------
# Entry points: dataset=csv/npz, and data given in Python
# ---------------------------------------------------------------------------------------------


def check_own_options(
    dataset: str, *, data_path: object = None, target: object = None, test_path: object = None
) -> None:
    """Raise a ``ValueError`` naming the option unless ``data_path``, ``target`` and
    ``test_path`` fit ``dataset``: a file format of :data:`OWN_FORMATS` needs ``data_path``
    (and ``csv`` a ``target``); ``target`` and ``test_path`` are for ``csv``; built-in datasets
    take none of them."""
    given = {"data_path": data_path, "target": target, "test_path": test_path}
    if dataset not in OWN_FORMATS:
        for key, value in given.items():
            if value is not None:
                formats = "dataset='csv' or 'npz'" if key == "data_path" else "dataset='csv'"
                raise ValueError(f"`{key}` applies to {formats} (your own file) only, but got dataset={dataset!r} "
                                 f"(and {key}={value!r}).")
        return
    if data_path is None:
        raise ValueError(f"Expected `data_path` to be the path of your {dataset.upper()} file for dataset={dataset!r}, "
                         f"but got None.")
    if dataset == "csv" and target is None:
        raise ValueError("Expected `target` to name the CSV file's target column for dataset='csv', but got None.")
    if dataset == "npz":
        why = {"target": "an NPZ file names its arrays x and y", "test_path": "an NPZ file holds x_test and y_test"}
        for key in ("target", "test_path"):
            if given[key] is not None:
                raise ValueError(f"`{key}` applies to dataset='csv' only ({why[key]}), but got dataset='npz' (and "
                                 f"{key}={given[key]!r}).")


def load_own(
    dataset: str,
    data_path: str | os.PathLike[str] | None,
    *,
    target: str | None = None,
    test_path: str | os.PathLike[str] | None = None,
    task: Task | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetSplits:
    """``dataset="csv"`` (:func:`load_csv`) or ``"npz"`` (:func:`load_npz`) with the options
    checked by :func:`check_own_options`. The labels are read for ``task`` (the embedding task's
    as classes); the task's own split is :func:`~adaloss.data.split_for_task`'s."""
    check_own_options(dataset, data_path=data_path, target=target, test_path=test_path)
    assert data_path is not None
    if dataset == "csv":
        assert target is not None
        return load_csv(data_path, target=target, test_path=test_path, task=task, valid_fraction=valid_fraction,
                        seed=seed)
    return load_npz(data_path, task=task, valid_fraction=valid_fraction, seed=seed)


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
                            f"{type(item).__name__}{'' if not isinstance(item, (tuple, list)) else f' of {len(item)}'}.")
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
    valid_fraction, seed = _check_common(valid_fraction, seed)
    arrays: dict[str, np.ndarray]
    if isinstance(data, Mapping):
        allowed = ("x", "y", "x_test", "y_test")
        unknown = sorted(str(k) for k in data if k not in allowed)
        missing = [k for k in ("x", "y") if k not in data]
        if unknown or missing:
            raise ValueError(f"Expected `data` to have the keys 'x' and 'y' (optionally 'x_test', 'y_test'), but got "
                             f"the keys {sorted(str(k) for k in data)}"
                             f"{f' (unknown: {unknown})' if unknown else ''}{f' (missing: {missing})' if missing else ''}.")
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
    return _from_arrays(name, arrays, task=task, valid_fraction=valid_fraction, seed=seed,
                        names=_Names("`data`", lambda key: repr(key)), error=ValueError)

