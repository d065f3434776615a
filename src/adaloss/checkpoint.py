"""Atomic checkpoint files that load without executing code from the file."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from adaloss.typing import StateDict

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "StorageError", "atomic_write", "load_checkpoint",
           "save_checkpoint"]

CHECKPOINT_FORMAT = "adaloss-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be trusted or read: foreign, tampered, truncated or too new."""


class StorageError(OSError):
    """A file could not be written (read-only folder, no permission, disk full); the message names
    the path and what to do. Nothing is left half-written."""

    def __init__(self, code: int, message: str, path: str) -> None:
        super().__init__(code, message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message


#: errors of the file system, as opposed to bugs: reported as a :class:`StorageError`
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO,
                            errno.ENOTDIR, errno.EFBIG})


def storage_error(path: str | os.PathLike[str], error: BaseException) -> StorageError:
    """A :class:`StorageError` for ``error`` met while writing ``path``, with a hint for its cause."""
    code = getattr(error, "errno", None)
    folder = Path(path).parent
    try:
        full = shutil.disk_usage(folder if folder.exists() else Path.cwd()).free < 16 * 2**20
    except OSError:
        full = False
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or full or code is None:  # torch's writer: no errno
        hint = "the disk (or quota) is full or the write was cut short: free space there, or choose another `run_dir`"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the folder is not writable by this user: make it writable, or choose another `run_dir`"
    elif code == errno.ENOTDIR:
        hint = "a part of that path is a file, not a folder: choose another `run_dir`"
    else:
        hint = "check the file system, or choose another `run_dir`"
    reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0][:200]
    return StorageError(code or errno.EIO, f"Could not write {str(path)!r} ({reason}); {hint}.", str(path))


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _is_write_failure(error: BaseException) -> bool:
    """An error of the writer rather than a bug: an ``OSError`` of the file system, or torch's
    stream writer failing on a full disk (a ``RuntimeError`` from ``inline_container.cc``)."""
    if isinstance(error, OSError):
        return error.errno in STORAGE_ERRNOS
    text = str(error)
    return isinstance(error, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text
                                                or "file write failed" in text)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write a file atomically: a crash leaves the previous file (or none) intact.

    ``write(f)`` fills a temporary file ``.<name>.*.tmp`` in the same folder, which is flushed
    to disk and then renamed over ``path`` (a rename within one file system is atomic). The file
    gets the mode of a plain ``open(path, "w")`` (``0o666`` less the umask). A read-only folder or
    a full disk is a :class:`StorageError` naming the path; the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if _is_write_failure(e):
            raise storage_error(path, e) from e
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _is_write_failure(e):
            raise storage_error(path, e) from e
        raise
    return path


def save_checkpoint(state: StateDict, path: str | os.PathLike[str]) -> Path:
    """Write ``state`` (plain containers and tensors) to ``path`` with :func:`atomic_write`."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> StateDict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers are
    rebuilt, so a file that tries to construct arbitrary objects is refused, not executed.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a readable adaloss checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    try:
        with warnings.catch_warnings():
            # a foreign legacy pickle makes torch warn about its protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(
            f"{str(path)!r} is not a loadable adaloss checkpoint (truncated, tampered with, or written by "
            f"other software; only tensors and plain containers are accepted): {e}"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an adaloss checkpoint: expected key 'format' == {CHECKPOINT_FORMAT!r}, "
            f"got {state.get('format') if isinstance(state, dict) else type(state).__name__!r}."
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {state.get('version')!r}; this adaloss reads version "
            f"{CHECKPOINT_VERSION}."
        )
    return state
