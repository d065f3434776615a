"""The built-in datasets: locating, verifying and reading each benchmark's files, building its
splits (:mod:`adaloss.data.protocol`), and :func:`load_dataset` — which also reads your own
CSV/NPZ files (:mod:`adaloss.data.own`).

One concern — the built-in datasets, each located, verified, read and split here; long because
there is one reader and builder per dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from adaloss._validation import check_fraction, unknown_name_error
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
from adaloss.data.own import OWN_FORMATS, check_own_options, load_own
from adaloss.data.protocol import TEST_FRACTION, TEST_SPLIT_SEED, holdout_rows, moments, table_splits
from adaloss.data.splits import _check_seed, stratified_split
from adaloss.data.tasks import split_for_task
from adaloss.data.types import DatasetSplits, TensorSplit
from adaloss.typing import Task

__all__ = ["DATASETS", "MAX_MISSING_FRACTION", "load_dataset"]

#: communities_crime: feature columns missing in more than this share of rows are dropped.
MAX_MISSING_FRACTION = 0.05

_MNIST_STATS = ((0.1307,), (0.3081,))
_FASHION_STATS = ((0.2860,), (0.3530,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


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
# Splitting and normalising the built-in sets
# ---------------------------------------------------------------------------------------------


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
        mean, std = moments(floats["train"], axis=(0, 2, 3))
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
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
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
