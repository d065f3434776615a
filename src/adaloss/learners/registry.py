"""Method name → learner, the table behind ``method=`` in configs and ``adaloss compare``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adaloss._validation import unknown_name_error
from adaloss.learners.base import Learner
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.losses import HANDCRAFTED_LOSSES, create_loss
from adaloss.typing import Task

__all__ = ["METHODS", "METHOD_TASKS", "create_learner", "methods_for", "register_method"]

#: name → factory ``(task, **method_args) -> Learner``
METHODS: dict[str, Callable[..., Learner]] = {}
#: name → the tasks the method applies to
METHOD_TASKS: dict[str, tuple[Task, ...]] = {}


def register_method(name: str, factory: Callable[..., Learner], *, tasks: tuple[Task, ...]) -> None:
    """Make ``method=name`` build ``factory(task=..., **method_args)`` for the given tasks."""
    if name in METHODS:
        raise ValueError(f"A method named {name!r} is already registered.")
    METHODS[name] = factory
    METHOD_TASKS[name] = tasks


def methods_for(task: Task) -> list[str]:
    """Registered methods that apply to ``task``, in registration order."""
    return [m for m, tasks in METHOD_TASKS.items() if task in tasks]


def create_learner(method: str, *, task: Task, **method_args: Any) -> Learner:
    """Build the learner for ``method``; options the method does not take raise a clear error."""
    if method not in METHODS:
        raise unknown_name_error("method", method, METHODS)
    if task not in METHOD_TASKS[method]:
        raise ValueError(
            f"Method {method!r} applies to {list(METHOD_TASKS[method])}, but the task is {task}; "
            f"methods for {task}: {methods_for(task)}."
        )
    return METHODS[method](task=task, **method_args)


def _handcrafted(name: str) -> Callable[..., Learner]:
    def factory(*, task: Task, **loss_args: Any) -> Learner:
        return FixedLossLearner(create_loss(name, task=task, **loss_args))

    return factory


for _name, (_task, _) in HANDCRAFTED_LOSSES.items():
    register_method(_name, _handcrafted(_name), tasks=(_task,))
