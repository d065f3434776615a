"""One writer per run directory: the lock, what counts as a run, and what a fresh start clears.

A run directory is written by one ``adaloss`` process at a time. :class:`RunDirLock` takes an
exclusive, non-blocking ``fcntl.flock`` on ``<run_dir>/.lock`` for the whole run (released when
the process ends, however it ends); a second writer gets :class:`RunDirectoryBusy` before it
changes anything. A directory that already holds a run (:func:`holds_run`) is only started
afresh with ``overwrite`` (its run's files are then removed, :func:`clear_run`) or continued
with ``resume``; otherwise :class:`RunDirectoryError`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "RunDirLock",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "check_run_dir",
    "clean_stale_temp_files",
    "clear_run",
    "finished_summary",
    "holds_run",
    "write_text_atomic",
]

LOCK_FILE = ".lock"

#: files (and folders) of a run that a fresh start with ``overwrite`` removes: the trainer's,
#: the comparison's ``diverged.json`` and the learners' resumable offline state
RUN_FILES: tuple[str, ...] = (
    "metrics.jsonl", "snapshots.jsonl", "summary.json", "diverged.json", "config.yaml", "checkpoints",
    "tensorboard", "taylorglo_search.json", "taylorglo_search.pkl",
)
#: the files whose presence means the directory holds a run (besides checkpoints and events)
_RUN_MARKERS: tuple[str, ...] = ("metrics.jsonl", "summary.json", "diverged.json", "snapshots.jsonl")


class RunDirectoryError(ValueError):
    """A run directory that holds a run, started afresh without ``overwrite`` or ``resume``."""


class RunDirectoryBusy(RuntimeError):
    """Another process holds the run directory's lock (it is training into it)."""


def holds_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """What in ``run_dir`` shows that a run was written there (empty: nothing; a fresh start is free).

    A run is ``metrics.jsonl``, ``snapshots.jsonl``, ``summary.json``, ``diverged.json``, any
    checkpoint (``checkpoints/**/*.pt``) or TensorBoard event file (``tensorboard/events.*``).
    """
    run = Path(run_dir)
    if not run.is_dir():
        return []
    found = [name for name in _RUN_MARKERS if (run / name).exists()]
    ckpts = run / "checkpoints"
    if ckpts.is_dir() and any(p.is_file() for p in ckpts.rglob("*.pt")):
        found.append("checkpoints/")
    events = run / "tensorboard"
    if events.is_dir() and any(events.glob("events.out.tfevents.*")):
        found.append("tensorboard/")
    return found


def check_run_dir(run_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool, probe: bool = False) -> None:
    """Refuse to start afresh in a directory that holds a run unless ``resume`` or ``overwrite``.

    ``probe``: first check that no other process holds the directory's lock (not while this
    process holds it: the probe would find its own lock).

    Raises:
        ValueError: both ``resume`` and ``overwrite``.
        RunDirectoryBusy: (``probe``) another process is writing ``run_dir``.
        RunDirectoryError: ``run_dir`` holds a run and neither was given.
    """
    if resume and overwrite:
        raise ValueError("Expected at most one of `resume` (continue the run in run_dir) and `overwrite` "
                         "(discard it and start afresh), but got both.")
    if probe:
        RunDirLock(run_dir).probe()
    if resume or overwrite:
        return
    found = holds_run(run_dir)
    if found:
        raise RunDirectoryError(
            f"Run directory {str(run_dir)!r} already holds a run ({', '.join(found)}). Continue it with --resume "
            "(Python: resume=True), discard it with --overwrite (overwrite=True), or choose another `run_dir`."
        )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file with :func:`adaloss.checkpoint.atomic_write`: a kill leaves the old file or
    the new one, never half of one."""
    from adaloss.checkpoint import atomic_write

    def write(f: BinaryIO) -> None:
        f.write(text.encode("utf-8"))

    return atomic_write(path, write)


def finished_summary(run_dir: str | os.PathLike[str], identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary of the finished run in ``run_dir`` (``summary.json``, or the ``diverged.json``
    that :func:`~adaloss.training.compare.compare` writes) when it was recorded with the
    configuration ``identity``; ``None`` otherwise."""
    for name in ("summary.json", "diverged.json"):
        try:
            summary = json.loads((Path(run_dir) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and summary.get("config") == dict(identity):
            return summary
    return None


def clean_stale_temp_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files (``.<name>.*.tmp``) that :func:`adaloss.checkpoint.atomic_write`
    leaves when a process is killed mid-write, in ``run_dir`` and under ``run_dir/checkpoints``.

    Call it only while holding the directory's lock: another writer's live temp file would go too.
    """
    run = Path(run_dir)
    found = list(run.glob(".*.tmp")) if run.is_dir() else []
    if (run / "checkpoints").is_dir():
        found += list((run / "checkpoints").rglob(".*.tmp"))
    removed = []
    for path in found:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def clear_run(run_dir: str | os.PathLike[str]) -> None:
    """Remove the files of the run in ``run_dir`` (:data:`RUN_FILES`); other files stay."""
    run = Path(run_dir)
    for name in RUN_FILES:
        path = run / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class RunDirLock:
    """An exclusive, non-blocking lock on ``<run_dir>/.lock`` (``fcntl.flock``).

    The lock belongs to the open file, so it is released when the process ends, even by
    ``kill -9``; the ``.lock`` file itself stays (removing it would let two processes lock two
    different files). On systems without ``fcntl`` nothing is locked.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, creating the directory and the (empty) lock file if needed.

        Raises:
            RunDirectoryBusy: another process holds it.
        """
        if self._fd is not None or fcntl is None:
            return
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirectoryError(f"Expected `run_dir` to be a directory, but {str(self.run_dir)!r} is a file.")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like every file of a run
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise self._busy() from None
        self._fd = fd

    def probe(self) -> None:
        """Raise :class:`RunDirectoryBusy` if another process holds the lock now; takes nothing
        and creates nothing (a quick check before the expensive part of starting a run)."""
        if self._fd is not None or fcntl is None or not self.path.is_file():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise self._busy() from None
        finally:
            os.close(fd)  # closing releases a lock taken here

    def _busy(self) -> RunDirectoryBusy:
        owner = self._owner()
        return RunDirectoryBusy(
            f"Run directory {str(self.run_dir)!r} is in use by another adaloss process"
            f"{f' ({owner})' if owner else ''}: one run directory takes one writer. Wait for it to finish, "
            "or choose another `run_dir`."
        )

    def record_owner(self) -> None:
        """Write this process's id into the lock file (shown to a second writer)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()}\n".encode(), 0)

    def _owner(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
