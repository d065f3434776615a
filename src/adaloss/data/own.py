"""Your own data files as :class:`~adaloss.data.DatasetSplits`: CSV tables and NPZ archives
(``dataset=csv`` / ``npz`` with ``data_path``).

Splits, task and labels as for arrays (:mod:`adaloss.data.arrays`); a CSV target column's
distinct values are mapped to ``0..C-1`` in sorted order (numbers numerically) and kept as
``DatasetSplits.class_names``, and a column that is not numeric is read as class names.

Every error names the file, the column or array, what was expected and what was found:
:class:`~adaloss.data.DataFormatError` for a file's content, ``FileNotFoundError`` for a missing
file.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaloss.data.arrays import (
    ArrayNames,
    Supervised,
    build_splits,
    check_split_options,
    from_arrays,
    infer_task,
    label_task,
)
from adaloss.data.formats import DataFormatError
from adaloss.data.types import DatasetSplits
from adaloss.typing import Task

__all__ = ["MISSING_MARKERS", "OWN_FORMATS", "check_own_options", "load_csv", "load_npz", "load_own"]

#: ``dataset=`` names of file formats read from ``data_path``.
OWN_FORMATS: tuple[str, ...] = ("csv", "npz")
#: CSV cells read as a missing value (compared in lower case).
MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})


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
    valid_fraction, seed = check_split_options(valid_fraction, seed)
    path = _existing_file(data_path, "data_path", "an NPZ archive (numpy.savez) with arrays 'x' and 'y'")
    names = ArrayNames(str(path), lambda key: f"array {key!r}")
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
        return from_arrays(path.name, arrays, task=task, valid_fraction=valid_fraction, seed=seed, names=names,
                            error=DataFormatError)
    except DataFormatError:
        raise
    except ValueError as e:  # the label checks shared with data given in Python
        raise DataFormatError(str(e)) from None




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
    table: _Table, target: str, test: _Table | None, task: Supervised | None
) -> tuple[Supervised, np.ndarray, np.ndarray | None, tuple[str, ...]]:
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
    valid_fraction, seed = check_split_options(valid_fraction, seed)
    if not isinstance(target, str):
        raise TypeError(f"Expected `target` to be the name of the target column, but got {target!r}.")
    if not target:
        raise ValueError("Expected `target` to be the name of the target column, but got an empty name.")
    read_as = label_task(task)
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
    task_, y, y_test, names = _csv_targets(table, target, test, read_as)
    return build_splits(
        table.path.name, x, y, None if x_test is None or y_test is None else (x_test, y_test),
        task=task_, num_classes=len(names), class_names=names, valid_fraction=valid_fraction, seed=seed,
        where=f"{table.path}: target column {target!r}", error=DataFormatError,
    )




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


