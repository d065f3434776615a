"""Where independent tasks run: the :class:`Executor` contract and the in-process executor."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from adaloss._validation import check_int

__all__ = ["EXECUTORS", "Executor", "ExecutorError", "LocalExecutor", "Resources", "TaskFailed", "call", "host_name"]

R = TypeVar("R")
EXECUTORS = ("local", "ray", "slurm")
ExecutorName = Literal["local", "ray", "slurm"]


class ExecutorError(RuntimeError):
    """An executor that cannot start: its package is missing, its cluster unreachable, an option wrong."""


@dataclass(frozen=True)
class Resources:
    """What one task needs: CPU cores (its torch threads) and GPUs."""

    cpus: int = 1
    gpus: int = 0


@dataclass(frozen=True)
class TaskFailed:
    """A task that failed for good (after ``attempts`` tries), and its error."""

    error: str
    attempts: int


class Executor(ABC):
    """Runs ``fn(item)`` — ``fn(shared, item)`` with ``shared`` given (sent once, not per task) —
    for every item of a list of independent tasks, and returns the results in the items' order.
    A task whose worker dies is retried (up to ``max_retries`` more times, where the executor can
    tell a death from an error); one that still fails comes back as a :class:`TaskFailed`. ``fn``,
    ``shared`` and the items must be picklable for the executors that run them elsewhere
    (module-level functions, plain data)."""

    name: str = ""

    def __init__(self, *, max_retries: int = 2) -> None:
        self.max_retries = check_int("max_retries", max_retries, minimum=0)

    @abstractmethod
    def map(self, fn: Callable[..., R], items: Sequence[Any], *, shared: Any = None, resources: Resources = Resources(),
            on_done: Callable[[int, R | TaskFailed], None] | None = None) -> list[R | TaskFailed]:
        """``[fn(item) for item in items]``, possibly in parallel; ``on_done(i, result)`` as each ends."""

    def close(self) -> None:
        """Release what the executor started (workers, a local cluster)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Every task in this process, one after another, in order; an error propagates at once (a
    killed process is resumed by running the same command again)."""

    name = "local"

    def map(self, fn: Callable[..., R], items: Sequence[Any], *, shared: Any = None, resources: Resources = Resources(),
            on_done: Callable[[int, R | TaskFailed], None] | None = None) -> list[R | TaskFailed]:
        out: list[R | TaskFailed] = []
        for i, item in enumerate(items):
            result = call(fn, shared, item)
            out.append(result)
            if on_done is not None:
                on_done(i, result)
        return out


def call(fn: Callable[..., R], shared: Any, item: Any) -> R:
    """``fn(item)``, or ``fn(shared, item)`` when ``shared`` is not ``None``."""
    return fn(item) if shared is None else fn(shared, item)


def host_name() -> str:
    """This machine's name, as recorded beside each run."""
    return socket.gethostname()
