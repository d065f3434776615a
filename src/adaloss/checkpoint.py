"""Atomic checkpoint files that load without executing code from the file."""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO

import torch

from adaloss.typing import StateDict

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "atomic_write", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "adaloss-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be trusted or read: foreign, tampered, truncated or too new."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write a file atomically: a crash leaves the previous file (or none) intact.

    ``write(f)`` fills a temporary file ``.<name>.*.tmp`` in the same folder, which is flushed
    to disk and then renamed over ``path`` (a rename within one file system is atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
