"""One writer per run directory: the lock, what counts as a run, and what a fresh start clears.

A run directory is written by one ``adaloss`` process at a time. :class:`RunDirLock` takes an
exclusive, non-blocking ``fcntl.flock`` on ``<run_dir>/.lock`` for the whole run (released when
the process ends, however it ends); a second writer gets :class:`RunDirectoryBusy` before it
changes anything. A directory that already holds a run (:func:`holds_run`) is only started
afresh with ``overwrite`` (its run's files are then removed, :func:`clear_run`) or continued
with ``resume``; otherwise :class:`RunDirectoryError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from adaloss.distributed import Collective

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "RunDirLock",
    "RunDirectory",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "check_run_dir",
    "config_diff",
    "clean_stale_temp_files",
    "clear_run",
    "finished_run",
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


def finished_run(run_dir: str | os.PathLike[str], identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """What ``--resume`` does on a finished run: nothing. The summary of the finished run of
    ``identity`` in ``run_dir`` (logging that there is nothing to do), or ``None``.

    Raises:
        RunDirectoryBusy: another process is writing ``run_dir`` (it may be replacing that run).
    """
    RunDirLock(run_dir).probe()
    done = finished_summary(run_dir, identity)
    if done is not None:
        logging.getLogger("adaloss").warning(
            "%s holds the finished run of this configuration: nothing to do (--overwrite trains it afresh)", run_dir)
    return done


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


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The keys in which two recorded configurations differ, as ``key: old -> new; …`` (empty: none)."""
    keys = sorted(set(saved) | set(current))
    return "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k))


#: what the trainer itself writes into a run directory before the first step
_TRAINER_FILES = frozenset({"config.yaml", "metrics.jsonl", "snapshots.jsonl", "summary.json", "tensorboard"})


class RunDirectory:
    """A trainer's hold on its run directory for one :meth:`~adaloss.training.Trainer.fit`.

    Only the ``writer`` (rank 0) touches the directory; with several ranks every outcome of
    :meth:`claim` is agreed over ``collective`` (one collective), so all ranks stop together.

    Args:
        path: the run directory (``None``: the run writes nothing; every method is a no-op).
        collective: the ranks of the run.
        writer: whether this rank writes the directory.
    """

    #: codes of the check, agreed over the ranks (the smallest wins)
    _OK, _HOLDS_RUN, _BUSY = 2, 1, 0

    def __init__(self, path: Path | None, *, collective: Collective, writer: bool) -> None:
        self.path = path
        self.collective = collective
        self.writer = writer and path is not None
        self._lock: RunDirLock | None = None
        #: the names in the directory before this run touched it (``None``: there was no directory)
        self._found: set[str] | None = None

    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Take the directory's lock and check that a run may start (or continue) here.

        Raises:
            ValueError: both ``resume`` and ``overwrite``.
            RunDirectoryBusy: another process is writing it.
            RunDirectoryError: it holds a run and neither ``resume`` nor ``overwrite`` was given.
        """
        if resume and overwrite:
            raise ValueError("Expected at most one of `resume` (continue the run in run_dir) and `overwrite` "
                             "(discard it and start afresh), but got both.")
        error: BaseException | None = None
        code = self._OK
        if self.writer:
            assert self.path is not None
            self._found = set(os.listdir(self.path)) if self.path.is_dir() else None
            self._lock = RunDirLock(self.path)
            try:
                self._lock.acquire()
                check_run_dir(self.path, resume=resume, overwrite=overwrite)
            except RunDirectoryBusy as e:
                error, code = e, self._BUSY
            except RunDirectoryError as e:
                error, code = e, self._HOLDS_RUN
        agreed = self.collective.min_int(code) if self.collective.world_size > 1 else code
        if error is not None:
            raise error
        if agreed != self._OK:
            # rank 0 raises its own, more precise error: wait until it has left (the barrier then
            # fails with a DistributedError), so that its error is the one reported
            self.collective.cpu().barrier()
        if agreed == self._BUSY:
            raise RunDirectoryBusy(f"Rank 0 could not lock run directory {str(self.path)!r}: another process "
                                   "is writing it.")
        if agreed == self._HOLDS_RUN:
            raise RunDirectoryError(f"Run directory {str(self.path)!r} already holds a run (see rank 0's error); "
                                    "use --resume or --overwrite.")

    def refuse_another_recorded_run(self, config: Mapping[str, Any] | None) -> None:
        """``resume`` without a checkpoint starts afresh: refuse it when the directory records a
        finished (or diverged) run of another configuration, which that would replace."""
        if self.path is None or config is None:
            return
        for name in ("summary.json", "diverged.json"):
            try:
                recorded = json.loads((self.path / name).read_text()).get("config")
            except (OSError, ValueError, AttributeError):
                continue
            diff = config_diff(recorded, config) if isinstance(recorded, dict) else ""
            if diff:
                raise ValueError(
                    f"Cannot resume: {str(self.path / name)!r} records a run with a different configuration "
                    f"({diff}) and there is no checkpoint to continue. Use a new run directory, the original "
                    "settings, or --overwrite (overwrite=True) to replace that run."
                )

    def prepare(self, *, overwrite: bool, run_config: Mapping[str, Any] | None) -> None:
        """After the checks passed: remove what a killed writer left (temp files), the old run when
        overwriting, write ``config.yaml`` and the owner into the lock file."""
        if self.writer:
            assert self.path is not None
            if overwrite:
                clear_run(self.path)
            clean_stale_temp_files(self.path)
            if run_config is not None:
                import yaml

                write_text_atomic(self.path / "config.yaml", yaml.safe_dump(dict(run_config), sort_keys=False))
            if self._lock is not None:
                self._lock.record_owner()
        if self.collective.world_size > 1:  # no worker writes before rank 0 has cleared the directory
            self.collective.min_int(0)

    def restore(self) -> None:
        """Remove what the trainer wrote (a run that failed before its first step and before any
        checkpoint: close its files first), and the directory too when this run made it and nothing
        else is left; a learner's resumable offline state (e.g. a search's progress) is kept. Only
        while holding the lock, so another writer's files are never touched."""
        if not self.writer or self._lock is None or not self._lock.held:
            return
        assert self.path is not None
        found = self._found
        for name in sorted(set(os.listdir(self.path)) - (found or set()) - {LOCK_FILE}):
            path = self.path / name
            if name == "checkpoints":
                with contextlib.suppress(OSError):  # only while empty
                    path.rmdir()
            elif name in _TRAINER_FILES or (name.startswith(".") and name.endswith(".tmp")):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if found is None or LOCK_FILE not in found:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
        if found is None:
            with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                self.path.rmdir()

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
