"""The executor named in a config or on the command line, built with its options: a missing extra
or a bad option is named before anything starts."""

from __future__ import annotations

import inspect
from typing import Any

from adaloss._validation import check_choice
from adaloss.executors.base import EXECUTORS, Executor, ExecutorName, LocalExecutor

__all__ = ["create_executor"]


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
    accepted = sorted(p for p in inspect.signature(cls).parameters if p != "self")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for executor={name!r}; accepted options: {accepted}.")
    return cls(**options)
