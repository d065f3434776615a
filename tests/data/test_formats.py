from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from adaloss.data.formats import (
    DataFormatError,
    UnsafePickleError,
    read_cifar_binary,
    read_cifar_python_batch,
    read_idx,
    read_numeric_table,
    read_svhn_mat,
    read_tar_members,
)

_IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, _IDX_CODES[array.dtype.name], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, dtype: str, compress: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    payload = idx_bytes(array)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_idx_truncated_payload_names_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]))
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz.*truncated"):
        read_idx(path)


def test_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(DataFormatError, match="labels.gz"):
        read_idx(path)


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(path)


def cifar_batch_pickle(images: np.ndarray, labels: list[int], *, label_key: str = "labels") -> bytes:
    batch = {b"batch_label": b"batch", label_key.encode(): labels, b"data": images, b"filenames": [b"x.png"]}
    return pickle.dumps(batch, protocol=2)  # the protocol of the published CIFAR pickles


def test_cifar_python_batch_round_trip() -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, 3072), dtype=np.uint8)
    x, y = read_cifar_python_batch(cifar_batch_pickle(images, [0, 1, 2, 3, 4, 5]), source="b")
    assert x.shape == (6, 3, 32, 32) and y.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(6, -1), images)
    np.testing.assert_array_equal(y, np.arange(6))


def test_cifar100_fine_labels_and_missing_key() -> None:
    images = np.zeros((2, 3072), np.uint8)
    data = cifar_batch_pickle(images, [42, 7], label_key="fine_labels")
    assert read_cifar_python_batch(data, source="b", label_key="fine_labels")[1].tolist() == [42, 7]
    with pytest.raises(DataFormatError, match="'labels'"):
        read_cifar_python_batch(data, source="b", label_key="labels")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"data": _Evil(marker), "labels": [0]}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"system.*numpy"):
        read_cifar_python_batch(data, source="evil_batch")
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins() -> None:
    data = pickle.dumps(eval, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"refusing.*eval"):
        read_cifar_python_batch(data, source="b")


def test_garbled_pickle_is_format_error() -> None:
    data = cifar_batch_pickle(np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(DataFormatError, match="garbled"):
        read_cifar_python_batch(data[: len(data) // 2], source="garbled")


@pytest.mark.parametrize(("label_bytes", "label_index"), [(1, 0), (2, 1)])
def test_cifar_binary_round_trip(label_bytes: int, label_index: int) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    labels = rng.integers(0, 100, (4, label_bytes), dtype=np.uint8)
    data = np.concatenate([labels, images], axis=1).tobytes()
    x, y = read_cifar_binary(data, source="b", label_bytes=label_bytes, label_index=label_index)
    np.testing.assert_array_equal(x.reshape(4, -1), images)
    np.testing.assert_array_equal(y, labels[:, label_index])
    with pytest.raises(DataFormatError, match="truncated"):
        read_cifar_binary(data[:-1], source="short.bin", label_bytes=label_bytes)


def test_tar_members(tmp_path: Path) -> None:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("d/one")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert read_tar_members(path, ["d/one"]) == {"d/one": b"abc"}
    with pytest.raises(DataFormatError, match="d/two"):
        read_tar_members(path, ["d/one", "d/two"])
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataFormatError, match="a.tar.gz"):
        read_tar_members(path, ["d/one"])


def test_svhn_mat_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    savemat(tmp_path / "s.mat", {"X": x, "y": y})
    images, labels = read_svhn_mat(tmp_path / "s.mat")
    assert images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(images[3, 2, 5, 7], x[5, 7, 2, 3])
    assert labels.tolist() == [0, 1, 2, 0, 9]


def test_svhn_mat_garbled(tmp_path: Path) -> None:
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataFormatError, match="bad.mat"):
        read_svhn_mat(tmp_path / "bad.mat")


def test_numeric_table_crlf_missing_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "t.data"
    path.write_bytes(b"8,?,Lakewood city,1.5,2\r\n9,3,O'Brien,?,4")
    table = read_numeric_table(path, num_columns=5, skip_columns=3)
    np.testing.assert_array_equal(table, [[1.5, 2.0], [np.nan, 4.0]])
    with pytest.raises(DataFormatError, match=r"t.data: row 2 has 4 columns"):
        path.write_bytes(b"1,2,3,4,5\n1,2,3,4\n")
        read_numeric_table(path, num_columns=5)
    path.write_bytes(b"1,2,x,4,5\n")
    with pytest.raises(DataFormatError, match="not a number"):
        read_numeric_table(path, num_columns=5)
