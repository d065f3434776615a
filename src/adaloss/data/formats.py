"""Parsers for the raw dataset file formats: IDX, CIFAR (python pickles and binary), SVHN .mat, CSV.

Every parser validates the layout it reads and raises :class:`DataFormatError` naming the file
when the content does not match, so a truncated or garbled file never turns into silently
wrong arrays.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "CIFAR_IMAGE_BYTES",
    "DataFormatError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_pickle_restricted",
    "parse_idx",
    "read_cifar_binary",
    "read_cifar_python_batch",
    "read_idx",
    "read_numeric_table",
    "read_svhn_mat",
    "read_tar_members",
]

#: Bytes of one 3x32x32 CIFAR image.
CIFAR_IMAGE_BYTES = 3 * 32 * 32

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class DataFormatError(ValueError):
    """A data file does not have the layout its format requires (truncated, garbled, wrong file)."""


class UnsafePickleError(DataFormatError, pickle.UnpicklingError):
    """A pickle referenced something other than the numpy array pieces a dataset batch needs."""


def _name(source: str | os.PathLike[str]) -> str:
    return os.fspath(source)


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------------------------


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataFormatError(
            f"{path}: not a valid gzip stream ({error}); the file is truncated or corrupt."
        ) from error


def parse_idx(buffer: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file.

    Args:
        buffer: The file content.
        source: Name used in error messages.

    Returns:
        The array in native byte order, shaped as the header says.
    """
    if len(buffer) < 4:
        raise DataFormatError(f"{source}: {len(buffer)} bytes is too short for an IDX header.")
    zero, type_code, ndim = struct.unpack(">HBB", buffer[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataFormatError(
            f"{source}: bad IDX magic number 0x{buffer[:4].hex()} (expected 0x0000 followed by a "
            f"type code in {sorted(hex(c) for c in _IDX_DTYPES)} and a non-zero dimension count)."
        )
    header_len = 4 + 4 * ndim
    if len(buffer) < header_len:
        raise DataFormatError(f"{source}: IDX header declares {ndim} dimensions but the file ends early.")
    dims = struct.unpack(f">{ndim}I", buffer[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(buffer) - header_len
    if actual != expected:
        raise DataFormatError(
            f"{source}: IDX header says shape {tuple(dims)} of {dtype.name} ({expected} payload "
            f"bytes) but the file holds {actual} payload bytes; it is truncated or corrupt."
        )
    array = np.frombuffer(buffer, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (detected from the content, not the name).

    Raises:
        DataFormatError: The header is invalid or the payload length does not match it.
    """
    path = Path(path)
    return parse_idx(_read_maybe_gzip(path), source=str(path))


# ---------------------------------------------------------------------------------------------
# Restricted pickles (CIFAR python batches)
# ---------------------------------------------------------------------------------------------

# The only globals a pickled numpy array needs. The functions are taken from numpy's own
# reductions so that the table is right for numpy 1.x (``numpy.core``) and 2.x (``numpy._core``)
# without importing the deprecated module path.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    # Python 3 pickles of ``bytes`` at protocol < 3 are ``_codecs.encode(str, "latin1")``.
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only plain containers, numbers, strings and numpy arrays.

    ``find_class`` never imports anything: any global outside a fixed allow-list raises
    :class:`UnsafePickleError` before a single object of the pickle is called.
    """

    def __init__(self, file: IO[bytes], *, source: str = "<pickle>", encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"{self._source}: refusing to load global '{module}.{name}'. Dataset pickles may only "
                f"reference numpy array reconstruction ({', '.join(allowed)}); this file is not a "
                "genuine dataset batch."
            ) from None


def load_pickle_restricted(data: bytes, *, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (latin-1 for Python 2 strings)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure inside a garbled pickle is a format error
        raise DataFormatError(
            f"{source}: not a readable pickle ({type(error).__name__}: {error})."
        ) from error


def _str_keys(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in mapping.items()}


def read_cifar_python_batch(
    data: bytes, *, source: str, label_key: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR python batch (a pickled dict with ``data`` and ``label_key``).

    Args:
        data: The pickle bytes.
        source: Name used in error messages.
        label_key: ``"labels"`` for CIFAR-10, ``"fine_labels"`` or ``"coarse_labels"`` for CIFAR-100.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.
    """
    batch = load_pickle_restricted(data, source=source)
    if not isinstance(batch, Mapping):
        raise DataFormatError(f"{source}: expected a pickled dict, got {type(batch).__name__}.")
    batch = _str_keys(batch)
    if "data" not in batch or label_key not in batch:
        raise DataFormatError(
            f"{source}: a CIFAR batch needs keys 'data' and {label_key!r}, found {sorted(batch)}."
        )
    images = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != CIFAR_IMAGE_BYTES:
        raise DataFormatError(
            f"{source}: expected 'data' to be uint8 of shape (N, {CIFAR_IMAGE_BYTES}), "
            f"got {images.dtype} {images.shape}."
        )
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{source}: expected {len(images)} integer labels under {label_key!r}, "
            f"got {labels.dtype} {labels.shape}."
        )
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar_binary(
    data: bytes, *, source: str, label_bytes: int = 1, label_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a CIFAR binary batch: records of ``label_bytes`` label bytes and 3072 pixel bytes.

    Args:
        data: The file content.
        source: Name used in error messages.
        label_bytes: 1 for CIFAR-10, 2 for CIFAR-100 (coarse byte, then fine byte).
        label_index: Which label byte to return (1 = fine label for CIFAR-100).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.
    """
    record = label_bytes + CIFAR_IMAGE_BYTES
    if not data or len(data) % record:
        raise DataFormatError(
            f"{source}: {len(data)} bytes is not a positive multiple of the {record}-byte CIFAR "
            "record; the file is truncated or not a CIFAR binary batch."
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = records[:, label_index].astype(np.int64)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


def read_tar_members(path: str | os.PathLike[str], names: Iterable[str]) -> dict[str, bytes]:
    """Read the named regular-file members of a (compressed) tar archive into memory.

    Nothing is extracted to disk, so member paths cannot escape any folder.

    Raises:
        DataFormatError: The archive is unreadable or lacks one of ``names``.
    """
    wanted = set(names)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None  # isfile() guarantees a file object
                    found[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataFormatError(
            f"{_name(path)}: unreadable archive ({error}); it is truncated or corrupt."
        ) from error
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataFormatError(f"{_name(path)}: archive lacks the member(s) {missing}.")
    return found


# ---------------------------------------------------------------------------------------------
# SVHN (.mat) and delimited tables
# ---------------------------------------------------------------------------------------------


def read_svhn_mat(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat`` file (``X``: (32, 32, 3, N) uint8, ``y``: (N, 1), 10 = digit 0).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)`` in 0..9.
    """
    from scipy.io import loadmat  # scipy.io is slow to import and only SVHN needs it

    try:
        content = loadmat(os.fspath(path), variable_names=("X", "y"))
    except Exception as error:  # noqa: BLE001 - scipy raises many types for garbled files
        raise DataFormatError(
            f"{_name(path)}: not a readable MATLAB file ({type(error).__name__}: {error})."
        ) from error
    if "X" not in content or "y" not in content:
        raise DataFormatError(f"{_name(path)}: an SVHN file needs variables 'X' and 'y'.")
    images, labels = content["X"], np.asarray(content["y"]).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise DataFormatError(
            f"{_name(path)}: expected X of shape (32, 32, 3, N) with N = {len(labels)} labels, "
            f"got {images.shape}."
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise DataFormatError(
            f"{_name(path)}: SVHN labels must lie in 0..10, got {labels.min()}..{labels.max()}."
        )
    labels[labels == 10] = 0
    images = np.ascontiguousarray(images.transpose(3, 2, 0, 1), dtype=np.uint8)
    return images, labels


def read_numeric_table(
    path: str | os.PathLike[str],
    *,
    num_columns: int,
    skip_columns: int = 0,
    delimiter: str = ",",
    missing: str = "?",
) -> np.ndarray:
    """Read a header-less delimited text table of numbers (LF or CRLF line ends).

    Args:
        path: The file.
        num_columns: Columns every row must have.
        skip_columns: Leading columns to drop unparsed (they may hold strings).
        delimiter: Field separator.
        missing: Marker of a missing value; it becomes NaN.

    Returns:
        float64 array of shape ``(rows, num_columns - skip_columns)``.
    """
    source = _name(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{source}: not a UTF-8 text table ({error}).") from error
    rows = [line.split(delimiter) for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataFormatError(f"{source}: the table is empty.")
    for number, row in enumerate(rows, start=1):
        if len(row) != num_columns:
            raise DataFormatError(
                f"{source}: row {number} has {len(row)} columns, expected {num_columns}; "
                "the file is truncated or not the expected table."
            )
    cells = np.array([row[skip_columns:] for row in rows], dtype=str)
    cells = np.char.strip(cells)
    cells[cells == missing] = "nan"
    try:
        return cells.astype(np.float64)
    except ValueError as error:
        raise DataFormatError(f"{source}: a cell is not a number ({error}).") from error
