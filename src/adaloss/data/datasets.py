"""Dataset registry: locating, verifying, parsing, splitting and normalising each benchmark.

Protocol shared by all datasets:

* The validation split is a seeded ``valid_fraction`` of the training data (stratified by class
  for classification); ``seed`` selects it, and the same seed always gives the same split.
* Sets without an official test split (``digits`` and the regression tables) hold out a fixed
  20% test split (seed 0, stratified for ``digits``) that does **not** depend on ``seed``, so
  runs with different seeds are scored on the same test samples.
* Every statistic used for normalisation (image means where not fixed, feature and target
  means/stds, imputation medians) comes from the training split only.
* The metric-learning (``"embedding"``) task of a classification set splits it *by class*
  (:func:`split_by_class`, ALA dossier §10.2): training and validation keep the training
  classes (the validation split is drawn from them as above), the test split keeps only the
  held-out classes, which the model never sees; it is the retrieval set.
"""

from __future__ import annotations

import dataclasses
import os
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from adaloss._validation import check_choice, check_fraction, check_int, unknown_name_error
from adaloss.data.download import (
    ENV_DATA_DIR,
    RESOURCES,
    check_md5,
    data_dir_origin,
    download_resource,
    resolve_data_dir,
)
from adaloss.data.formats import (
    DataFormatError,
    read_cifar_binary,
    read_cifar_python_batch,
    read_idx,
    read_numeric_table,
    read_svhn_mat,
    read_tar_members,
)
from adaloss.data.splits import _check_seed, random_split, stratified_split
from adaloss.typing import Task

__all__ = [
    "DATASETS",
    "DEFAULT_EMBEDDING_DIM",
    "DatasetSplits",
    "TaskOptionError",
    "TensorSplit",
    "load_dataset",
    "split_by_class",
    "split_for_task",
    "subsample_classes",
]

#: Share and seed of the fixed test split carved from sets that have no official one.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
#: communities_crime: feature columns missing in more than this share of rows are dropped.
MAX_MISSING_FRACTION = 0.05
#: Embedding dimension of the metric-learning task when none is given.
DEFAULT_EMBEDDING_DIM = 64

_MNIST_STATS = ((0.1307,), (0.3081,))
_FASHION_STATS = ((0.2860,), (0.3530,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


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


# ---------------------------------------------------------------------------------------------
# Locating and verifying files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageData:
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class _Layout:
    """A set of files (relative to one folder) and the reader that turns them into arrays."""

    files: tuple[str, ...]
    read: Callable[[Path], object]


@dataclass(frozen=True)
class _Location:
    """Where a dataset's files may lie under the data folder."""

    folder: str  # canonical folder; downloads go here
    alternatives: tuple[str, ...]  # other accepted folders ("" = the data folder itself)
    layouts: tuple[_Layout, ...]  # accepted file sets, in order of preference
    source: str  # where download=True fetches from, for messages


def _find_files(
    name: str, *, data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[_Layout, Path]:
    """Return the first complete, md5-verified layout of ``name``, downloading it if allowed."""
    location = _LOCATIONS[name]
    root = resolve_data_dir(data_dir)
    folders = [root / location.folder, *(root / alt for alt in location.alternatives)]
    for layout in location.layouts:
        for folder in folders:
            if all((folder / file).is_file() for file in layout.files):
                for file in layout.files:
                    check_md5(folder / file, RESOURCES[name][file].md5)
                return layout, folder
    if download:
        target = root / location.folder
        for file, resource in RESOURCES[name].items():
            if resource.urls and not (target / file).is_file():
                download_resource(resource, target / file)
        return _find_files(name, data_dir=data_dir, download=False)
    file_sets = "\n".join(f"  - {', '.join(layout.files)}" for layout in location.layouts)
    raise FileNotFoundError(
        f"Dataset {name!r} not found in the data folder {root} ({data_dir_origin(data_dir)}).\n"
        f"Searched the folders: {', '.join(str(f) for f in folders)}\n"
        f"Expected {'one of these file sets' if len(location.layouts) > 1 else 'the files'}:\n{file_sets}\n"
        f"To fix: pass --data-dir / data_dir=... (or set {ENV_DATA_DIR}) to a folder that holds them, "
        f"or pass download=True to fetch them from {location.source} into {root / location.folder}."
    )


# ---------------------------------------------------------------------------------------------
# Readers: folder -> arrays
# ---------------------------------------------------------------------------------------------


def _read_idx_images(folder: Path) -> _ImageData:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        image_path = folder / f"{prefix}-images-idx3-ubyte.gz"
        label_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataFormatError(f"{image_path}: expected uint8 (N, 28, 28), got {images.dtype} {images.shape}.")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataFormatError(f"{label_path}: expected {len(images)} labels, got shape {labels.shape}.")
        arrays[split] = (images[:, None], labels)
    return _ImageData(*arrays["train"], *arrays["test"])


def _stack_batches(batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> _ImageData:
    """Batches in order train..., test -> arrays (the last batch is the test set)."""
    *train, test = batches
    return _ImageData(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test[0], test[1]
    )


_Decoder = Callable[[str, bytes], tuple[np.ndarray, np.ndarray]]


def _cifar_layouts(
    *,
    py_files: tuple[str, ...],
    py_archive: str,
    bin_files: tuple[str, ...],
    bin_archive: str,
    label_key: str,
    label_bytes: int,
    label_index: int,
) -> tuple[_Layout, ...]:
    """CIFAR layouts, preferred first: extracted python folder, python archive, binary folder/archive.

    ``py_files`` and ``bin_files`` list the training batches first and the test batch last.
    """

    def decode_py(source: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        return read_cifar_python_batch(data, source=source, label_key=label_key)

    def decode_bin(source: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        return read_cifar_binary(data, source=source, label_bytes=label_bytes, label_index=label_index)

    def from_folder(files: tuple[str, ...], decode: _Decoder) -> _Layout:
        def read(folder: Path) -> _ImageData:
            return _stack_batches([decode(str(folder / f), (folder / f).read_bytes()) for f in files])

        return _Layout(files, read)

    def from_archive(archive: str, members: tuple[str, ...], decode: _Decoder) -> _Layout:
        def read(folder: Path) -> _ImageData:
            blobs = read_tar_members(folder / archive, members)
            return _stack_batches([decode(f"{folder / archive}:{m}", blobs[m]) for m in members])

        return _Layout((archive,), read)

    return (
        from_folder(py_files, decode_py),
        from_archive(py_archive, py_files, decode_py),
        from_folder(bin_files, decode_bin),
        from_archive(bin_archive, bin_files, decode_bin),
    )


def _read_svhn(folder: Path) -> _ImageData:
    return _ImageData(*read_svhn_mat(folder / "train_32x32.mat"), *read_svhn_mat(folder / "test_32x32.mat"))


def _read_cal_housing(folder: Path) -> np.ndarray:
    return read_numeric_table(folder / "cal_housing.data", num_columns=9)


def _read_communities(folder: Path) -> np.ndarray:
    # Columns 1-5 (state, county, community, communityname, fold) are not predictive.
    return read_numeric_table(folder / "communities.data", num_columns=128, skip_columns=5)


def _idx_location(folder: str, torchvision_folder: str, source: str) -> _Location:
    files = tuple(f"{s}-{kind}-ubyte.gz" for s in ("train", "t10k") for kind in ("images-idx3", "labels-idx1"))
    # MNIST and Fashion-MNIST share file names, so neither is looked for in the bare data folder.
    return _Location(folder, (f"{torchvision_folder}/raw",), (_Layout(files, _read_idx_images),), source)


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_LOCATIONS: dict[str, _Location] = {
    "mnist": _idx_location("mnist", "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/ or yann.lecun.com"),
    "fashion_mnist": _idx_location(
        "fashion-mnist", "FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    ),
    "cifar10": _Location(
        "cifar-10",
        ("",),
        _cifar_layouts(
            py_files=tuple(f"cifar-10-batches-py/{b}" for b in (*_CIFAR10_TRAIN, "test_batch")),
            py_archive="cifar-10-python.tar.gz",
            bin_files=tuple(f"cifar-10-batches-bin/{b}.bin" for b in (*_CIFAR10_TRAIN, "test_batch")),
            bin_archive="cifar-10-binary.tar.gz",
            label_key="labels",
            label_bytes=1,
            label_index=0,
        ),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": _Location(
        "cifar-100",
        ("",),
        _cifar_layouts(
            py_files=("cifar-100-python/train", "cifar-100-python/test"),
            py_archive="cifar-100-python.tar.gz",
            bin_files=("cifar-100-binary/train.bin", "cifar-100-binary/test.bin"),
            bin_archive="cifar-100-binary.tar.gz",
            label_key="fine_labels",
            label_bytes=2,
            label_index=1,  # records are (coarse, fine, pixels); the task uses fine labels
        ),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
    "svhn": _Location(
        "svhn", ("SVHN", ""), (_Layout(("train_32x32.mat", "test_32x32.mat"), _read_svhn),),
        "http://ufldl.stanford.edu/housenumbers/",
    ),
    "california_housing": _Location(
        "california-housing", ("CaliforniaHousing", ""), (_Layout(("cal_housing.data",), _read_cal_housing),),
        "https://ndownloader.figshare.com/files/5976036 (scikit-learn's archive)",
    ),
    "communities_crime": _Location(
        "communities-and-crime", ("",), (_Layout(("communities.data",), _read_communities),),
        "https://archive.ics.uci.edu/ml/machine-learning-databases/communities/",
    ),
}


# ---------------------------------------------------------------------------------------------
# Splitting and normalisation
# ---------------------------------------------------------------------------------------------


def _moments(x: np.ndarray, *, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
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
    return {"train": train, "valid": valid} if test_rows is None else {"train": train, "valid": valid, "test": test_rows}


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
    x_mean, x_std = _moments(parts["train"][0], axis=0)
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


def _check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(
            f"{name}: labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}."
        )


def _classification(
    name: str,
    data: _ImageData,
    *,
    num_classes: int,
    scale: float,
    stats: tuple[Sequence[float], Sequence[float]] | None,
    augment: Literal["none", "crop_flip"],
    valid_fraction: float,
    seed: int,
) -> DatasetSplits:
    """Carve the validation split, scale pixels to [0, 1] and normalise per channel.

    ``stats=None`` normalises with the per-channel mean/std of the training split.
    """
    _check_labels(data.train_y, num_classes, name)
    _check_labels(data.test_y, num_classes, name)
    keep, held = stratified_split(data.train_y, fraction=valid_fraction, seed=seed)
    # Index the compact uint8 arrays first; convert each split to float32 once.
    raw = {
        "train": (data.train_x[keep], data.train_y[keep]),
        "valid": (data.train_x[held], data.train_y[held]),
        "test": (data.test_x, data.test_y),
    }
    inverse_scale = np.float32(1.0 / scale)
    floats = {split: np.multiply(x, inverse_scale, dtype=np.float32) for split, (x, _) in raw.items()}
    channels = data.train_x.shape[1]
    if stats is None:
        mean, std = _moments(floats["train"], axis=(0, 2, 3))
    else:
        mean, std = np.asarray(stats[0], dtype=np.float64), np.asarray(stats[1], dtype=np.float64)
    mean = mean.astype(np.float32).reshape(1, channels, 1, 1)
    std = std.astype(np.float32).reshape(1, channels, 1, 1)
    splits = {}
    for split, x in floats.items():
        x -= mean
        x /= std
        labels = np.array(raw[split][1], dtype=np.int64)
        splits[split] = TensorSplit(torch.from_numpy(x), torch.from_numpy(labels))
    return DatasetSplits(
        name=name,
        task="classification",
        input_shape=tuple(int(d) for d in data.train_x.shape[1:]),
        num_outputs=num_classes,
        augment=augment,
        **splits,
    )


def _regression(
    name: str, features: np.ndarray, target: np.ndarray, *, valid_fraction: float, seed: int
) -> DatasetSplits:
    """Fixed 20% test split, seeded validation split, then standardise features and targets.

    Missing features (NaN) are imputed with the training split's column medians; features and
    targets are standardised with training-split means/stds (a constant column keeps std 1).
    """
    if np.isnan(target).any():
        raise DataFormatError(f"{name}: the target column has missing values.")
    index = holdout_rows(len(target), labels=None, valid_fraction=valid_fraction, seed=seed)
    train_x = features[index["train"]]
    missing = np.isnan(features)
    if missing.any():
        columns = np.flatnonzero(missing.any(axis=0))
        present = ~np.isnan(train_x[:, columns])
        if not present.any(axis=0).all():
            raise DataFormatError(f"{name}: a feature column has no training value to impute from.")
        medians = np.array([np.median(train_x[ok, c]) for c, ok in zip(columns, present.T)])
        features = features.copy()
        rows, cols = np.nonzero(missing[:, columns])
        features[rows, columns[cols]] = medians[cols]
    return table_splits(name, {split: (features[idx], target[idx]) for split, idx in index.items()},
                        task="regression")


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
    """The metric-learning (``"embedding"``) task of a classification dataset (dossier §10.2).

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
    raise TaskOptionError("task", f"Expected `task` for dataset {data.name!r} to be one of {allowed}, but got {task!r}.")


# ---------------------------------------------------------------------------------------------
# Per-dataset builders
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    name: str
    data_dir: str | os.PathLike[str] | None
    download: bool
    valid_fraction: float
    seed: int


def _load_files(request: _Request) -> object:
    layout, folder = _find_files(request.name, data_dir=request.data_dir, download=request.download)
    return layout.read(folder)


def _image_builder(
    num_classes: int, stats: tuple[Sequence[float], Sequence[float]], augment: Literal["none", "crop_flip"]
) -> Callable[[_Request], DatasetSplits]:
    def build(request: _Request) -> DatasetSplits:
        data = _load_files(request)
        assert isinstance(data, _ImageData)
        return _classification(
            request.name, data, num_classes=num_classes, scale=255.0, stats=stats, augment=augment,
            valid_fraction=request.valid_fraction, seed=request.seed,
        )

    return build


def _build_digits(request: _Request) -> DatasetSplits:
    """scikit-learn's bundled 8x8 digits (values 0..16), with a fixed stratified 20% test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (1797, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    rest, test = stratified_split(labels, fraction=TEST_FRACTION, seed=TEST_SPLIT_SEED)
    data = _ImageData(images[rest], labels[rest], images[test], labels[test])
    return _classification(
        request.name, data, num_classes=10, scale=16.0, stats=None, augment="none",
        valid_fraction=request.valid_fraction, seed=request.seed,
    )


def _build_california(request: _Request) -> DatasetSplits:
    """StatLib California housing: 8 features, target medianHouseValue (dollars)."""
    table = _load_files(request)
    assert isinstance(table, np.ndarray)
    return _regression(
        request.name, table[:, :-1], table[:, -1], valid_fraction=request.valid_fraction, seed=request.seed
    )


def _build_communities(request: _Request) -> DatasetSplits:
    """UCI Communities and Crime: 122 predictive columns, target ViolentCrimesPerPop.

    Feature columns missing in more than ``MAX_MISSING_FRACTION`` of all rows (the 22 police
    statistics, missing in ~84% of communities) are dropped; this depends only on which cells
    are missing, never on values, so every seed gets the same 100 features. Remaining gaps
    (one ``OtherPerCap`` cell in the canonical file) get the training split's median.
    """
    table = _load_files(request)
    assert isinstance(table, np.ndarray)
    features, target = table[:, :-1], table[:, -1]
    keep = np.isnan(features).mean(axis=0) <= MAX_MISSING_FRACTION
    return _regression(
        request.name, features[:, keep], target, valid_fraction=request.valid_fraction, seed=request.seed
    )


def _build_diabetes(request: _Request) -> DatasetSplits:
    """scikit-learn's bundled diabetes set (raw, unscaled features; 442 samples, 10 features)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    features = np.asarray(bunch.data, dtype=np.float64)
    target = np.asarray(bunch.target, dtype=np.float64)
    return _regression(
        request.name, features, target, valid_fraction=request.valid_fraction, seed=request.seed
    )


_BUILDERS: dict[str, Callable[[_Request], DatasetSplits]] = {
    "digits": _build_digits,
    "mnist": _image_builder(10, _MNIST_STATS, "none"),
    "fashion_mnist": _image_builder(10, _FASHION_STATS, "none"),
    "cifar10": _image_builder(10, _CIFAR10_STATS, "crop_flip"),
    "cifar100": _image_builder(100, _CIFAR100_STATS, "crop_flip"),
    "svhn": _image_builder(10, _SVHN_STATS, "crop_flip"),
    "california_housing": _build_california,
    "communities_crime": _build_communities,
    "diabetes": _build_diabetes,
}

#: Registered dataset names.
DATASETS: tuple[str, ...] = tuple(_BUILDERS)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    valid_fraction: float = 0.1,
    seed: int = 0,
    task: Task | None = None,
    train_classes: Sequence[int] | None = None,
    embedding_dim: int | None = None,
    data_path: str | os.PathLike[str] | None = None,
    target: str | None = None,
    test_path: str | os.PathLike[str] | None = None,
) -> DatasetSplits:
    """Load a registered dataset, or your own file, as normalised in-memory train/valid/test splits.

    Files are looked up under the data folder (``data_dir``, else ``$ADALOSS_DATA``, else
    ``~/.cache/adaloss``) in the layout of the shared dataset folder (``mnist/``,
    ``fashion-mnist/``, ``cifar-10/``, ``cifar-100/``, ``svhn/``, ``california-housing/``,
    ``communities-and-crime/``), the torchvision layouts (``MNIST/raw/``, ``FashionMNIST/raw/``)
    or, except for the MNIST-style sets, directly in the data folder. They are md5-verified
    before use. ``digits`` and ``diabetes`` ship with scikit-learn and need no files.

    Image sets are scaled to [0, 1] and normalised per channel with the usual published means
    and stds (``digits``: those of its training split). See the module docstring for the
    split protocol.

    ``name="csv"`` or ``"npz"`` reads your own file ``data_path`` instead
    (:mod:`adaloss.data.own`: a CSV table whose column ``target`` holds the labels or targets,
    optionally with a test table ``test_path``; an NPZ archive of arrays ``x``, ``y``, optionally
    ``x_test``, ``y_test``), split and standardised like the built-in tables; ``task``, if given,
    decides how the targets are read (else it is inferred).

    Args:
        name: One of :data:`DATASETS`, or ``"csv"``/``"npz"``.
        data_dir: Data folder; overrides ``$ADALOSS_DATA``.
        download: Fetch missing files from the canonical source (md5-verified) into
            ``<data folder>/<dataset folder>/``.
        valid_fraction: Share of the training data held out for validation, in (0, 1).
        seed: Selects the validation split.
        task: ``None`` (the dataset's own task), that task, or ``"embedding"`` for a
            classification set: split by class with :func:`split_by_class`.
        train_classes: embedding task only: the training classes (default: the first half).
        embedding_dim: embedding task only: the embedding dimension (default
            :data:`DEFAULT_EMBEDDING_DIM`).
        data_path: ``csv``/``npz``: the file.
        target: ``csv``: the name of the target column.
        test_path: ``csv``: a CSV file with the same columns as the test set (default: a fixed
            20% test split of ``data_path``).

    Raises:
        ValueError: Unknown ``name`` (the message lists the registered names), or a ``task``
            the dataset does not support (or embedding options without the embedding task), or
            ``data_path``/``target``/``test_path`` that do not fit ``name``.
        FileNotFoundError: Files missing and ``download=False``; no file at ``data_path``.
        ChecksumError: A file's md5 differs from the published one.
        DataFormatError: A file does not parse as its format.
        DownloadError: ``download=True`` and no source could be fetched.
    """
    from adaloss.data.own import OWN_FORMATS, check_own_options, load_own

    if name not in _BUILDERS and name not in OWN_FORMATS:
        raise unknown_name_error("dataset", name, (*DATASETS, *OWN_FORMATS))
    check_own_options(name, data_path=data_path, target=target, test_path=test_path)
    if name in OWN_FORMATS:
        data = load_own(name, data_path, target=target, test_path=test_path, task=task,
                        valid_fraction=valid_fraction, seed=seed)
        return split_for_task(data, task=task, train_classes=train_classes, embedding_dim=embedding_dim)
    if not isinstance(download, bool):
        raise TypeError(
            f"Expected `download` to be a bool, but got {download!r} ({type(download).__name__})."
        )
    valid_fraction = check_fraction("valid_fraction", valid_fraction)
    seed = _check_seed(seed)
    data = _BUILDERS[name](_Request(name, data_dir, download, valid_fraction, seed))
    return split_for_task(data, task=task, train_classes=train_classes, embedding_dim=embedding_dim)
