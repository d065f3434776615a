"""Where independent tasks run: the :class:`Executor` contract, the in-process executor, and the
factory that names a missing extra or a bad option before anything starts."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from adaloss._validation import check_choice, check_int

__all__ = ["EXECUTORS", "Executor", "ExecutorError", "LocalExecutor", "Resources", "TaskFailed", "create_executor"]

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
    """A task that failed for good (after ``attempts`` tries): its error, and where it ran last."""

    error: str
    attempts: int
    host: str | None = None


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


def create_executor(name: ExecutorName | Executor | None = "local", **options: Any) -> Executor:
    """The executor ``name`` with its ``options`` (an :class:`Executor` is returned as it is).

    * ``local``: this process.
    * ``ray``: :class:`~adaloss.executors.ray.RayExecutor` (``address``: a running cluster, else
      ``RAY_ADDRESS``, else a local Ray started here; ``num_cpus`` of that local Ray).
    * ``slurm``: :class:`~adaloss.executors.slurm.SlurmExecutor` through submitit (``partition``,
      ``time_min``, ``gpus_per_task``, ``folder``, ``cluster``).

    Raises:
        ValueError: an unknown name, or options the executor does not take.
        ExecutorError: its package is missing (with the extra that installs it), or the cluster is unreachable.
    """
    if isinstance(name, Executor):
        if options:
            raise ValueError(f"Executor options apply to an executor named by a string, but got an Executor and "
                             f"options {sorted(options)}.")
        return name
    chosen = check_choice("executor", name or "local", EXECUTORS)
    if chosen == "local":
        unknown = sorted(set(options) - {"max_retries"})
        if unknown:
            raise ValueError(f"Options {unknown} apply to the ray or slurm executor, but executor='local'.")
        return LocalExecutor(**options)
    if chosen == "ray":
        from adaloss.executors.ray import RayExecutor

        return _call("ray", RayExecutor, options)
    from adaloss.executors.slurm import SlurmExecutor

    return _call("slurm", SlurmExecutor, options)


def _call(name: str, cls: type[Executor], options: dict[str, Any]) -> Executor:
    import inspect

    accepted = sorted(p for p in inspect.signature(cls).parameters if p != "self")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for executor={name!r}; accepted options: {accepted}.")
    return cls(**options)


def call(fn: Callable[..., R], shared: Any, item: Any) -> R:
    """``fn(item)``, or ``fn(shared, item)`` when ``shared`` is not ``None``."""
    return fn(item) if shared is None else fn(shared, item)


def host_name() -> str:
    """This machine's name, as recorded beside each run."""
    return socket.gethostname()
