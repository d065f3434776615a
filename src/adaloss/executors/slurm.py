"""Independent tasks as Slurm jobs through submitit (``adaloss[slurm]``), or as local processes
with submitit's local executor (for tests, and machines without Slurm)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from adaloss._optional import import_optional
from adaloss._validation import check_choice, check_int
from adaloss.executors.base import Executor, ExecutorError, Resources, TaskFailed, call

__all__ = ["SlurmExecutor"]

R = TypeVar("R")


class SlurmExecutor(Executor):
    """One job per item (``submitit.AutoExecutor``), with ``cpus_per_task`` = the task's CPUs and
    its GPUs; a job that ends without a result (killed, preempted, node failure) is submitted again,
    up to ``max_retries`` times; one whose function raised is not.

    Args:
        folder: where submitit keeps the jobs' scripts, logs and results (on the shared file system).
        partition: the Slurm partition (``None``: the cluster's default).
        time_min: each job's time limit in minutes.
        gpus_per_task: GPUs of each job (``None``: the task's own, 1 for ``device=cuda`` runs).
        cluster: ``"slurm"``, ``"local"`` (submitit's local executor: subprocesses of this machine) or
            ``None`` (Slurm where it is available, else local).
        max_retries: resubmissions of a job that ended without a result.
    """

    name = "slurm"

    def __init__(self, *, folder: str = "runs/submitit", partition: str | None = None, time_min: int = 60,
                 gpus_per_task: int | None = None, cluster: Literal["slurm", "local"] | None = None,
                 max_retries: int = 2) -> None:
        super().__init__(max_retries=max_retries)
        self.submitit = import_optional("submitit", needed_for="executor='slurm'", extra="slurm", error=ExecutorError)
        self.folder = Path(folder)
        self.partition = partition
        self.time_min = check_int("time_min", time_min, minimum=1)
        self.gpus_per_task = None if gpus_per_task is None else check_int("gpus_per_task", gpus_per_task, minimum=0)
        self.cluster = None if cluster is None else check_choice("cluster", cluster, ("slurm", "local"))

    def _executor(self, resources: Resources) -> Any:
        ex = self.submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.time_min, "cpus_per_task": resources.cpus}
        gpus = self.gpus_per_task if self.gpus_per_task is not None else resources.gpus
        if ex.cluster == "slurm":
            params["gpus_per_node"] = gpus
            if self.partition is not None:
                params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        return ex

    def map(self, fn: Callable[..., R], items: Sequence[Any], *, shared: Any = None, resources: Resources = Resources(),
            on_done: Callable[[int, R | TaskFailed], None] | None = None) -> list[R | TaskFailed]:
        ex = self._executor(resources)
        jobs = {i: ex.submit(call, fn, shared, item) for i, item in enumerate(items)}
        attempts = dict.fromkeys(jobs, 1)
        out: list[R | TaskFailed | None] = [None] * len(items)
        while jobs:
            for i, job in list(jobs.items()):
                if not job.done():
                    continue
                del jobs[i]
                try:
                    result: Any = job.result()
                except self.submitit.core.utils.FailedJobError as e:  # the function raised (a subclass: first)
                    result = TaskFailed(f"{type(e).__name__}: {e}", attempts=attempts[i])
                except self.submitit.core.utils.UncompletedJobError as e:  # ended without a result: retried
                    result = self._retry_or_fail(ex, fn, shared, items, i, jobs, attempts, e)
                if result is _RESUBMITTED:
                    continue
                out[i] = result
                if on_done is not None:
                    on_done(i, result)
            if jobs:
                time.sleep(0.5)
        return out  # type: ignore[return-value]

    def _retry_or_fail(self, ex: Any, fn: Callable[..., R], shared: Any, items: Sequence[Any], i: int,
                       jobs: dict[int, Any], attempts: dict[int, int], error: Exception) -> Any:
        if attempts[i] <= self.max_retries:
            attempts[i] += 1
            jobs[i] = ex.submit(call, fn, shared, items[i])
            return _RESUBMITTED
        return TaskFailed(f"{type(error).__name__}: {error}", attempts=attempts[i])


_RESUBMITTED = object()
