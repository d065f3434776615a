"""Datasets as normalised in-memory splits (built-in sets and your own files or arrays), their file
formats, downloads and augmentation."""

from __future__ import annotations

from adaloss.data.arrays import as_splits
from adaloss.data.augment import random_crop_flip
from adaloss.data.download import ChecksumError, DownloadError, resolve_data_dir
from adaloss.data.formats import DataFormatError, UnsafePickleError, read_idx
from adaloss.data.loader import BatchLoader, ClassBalancedLoader, iterate_batches
from adaloss.data.noise import add_label_noise, corrupt_labels
from adaloss.data.own import OWN_FORMATS, load_csv, load_npz
from adaloss.data.registry import DATASETS, load_dataset
from adaloss.data.splits import random_split, stratified_split
from adaloss.data.tasks import TaskOptionError, split_by_class, split_for_task, subsample_classes
from adaloss.data.types import DatasetSplits, TensorSplit

__all__ = [
    "DATASETS",
    "BatchLoader",
    "ChecksumError",
    "ClassBalancedLoader",
    "DataFormatError",
    "DatasetSplits",
    "DownloadError",
    "OWN_FORMATS",
    "TaskOptionError",
    "TensorSplit",
    "UnsafePickleError",
    "add_label_noise",
    "as_splits",
    "corrupt_labels",
    "iterate_batches",
    "load_csv",
    "load_dataset",
    "load_npz",
    "random_crop_flip",
    "random_split",
    "read_idx",
    "resolve_data_dir",
    "split_by_class",
    "split_for_task",
    "subsample_classes",
    "stratified_split",
]
