"""Where independent trainings run: in this process (``local``), on a Ray cluster (``ray``) or as
Slurm jobs through submitit (``slurm``) — for ``compare``'s runs and TaylorGLO's candidates."""

from adaloss.executors.base import EXECUTORS, Executor, ExecutorError, LocalExecutor, Resources, TaskFailed
from adaloss.executors.factory import create_executor

__all__ = ["EXECUTORS", "Executor", "ExecutorError", "LocalExecutor", "Resources", "TaskFailed", "create_executor"]
