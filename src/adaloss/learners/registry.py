"""Method name → learner, the table behind ``method=`` in configs and ``adaloss compare``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from adaloss._validation import call_with_options, check_positive, unknown_name_error
from adaloss.learners.base import Learner
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.losses import HANDCRAFTED_LOSSES, create_loss
from adaloss.typing import Task

__all__ = ["METHODS", "METHOD_TASKS", "create_learner", "methods_for", "register_method", "takes_target_metric"]

#: name → factory ``(task, **method_args) -> Learner``
METHODS: dict[str, Callable[..., Learner]] = {}
#: name → the tasks the method applies to
METHOD_TASKS: dict[str, tuple[Task, ...]] = {}
#: methods that need arguments (e.g. a file) and so are left out of a default comparison
_NEEDS_ARGS: set[str] = set()
#: methods that optimise a named evaluation metric (their factory takes ``metric=``)
_TARGET_METRIC: set[str] = set()


def register_method(
    name: str, factory: Callable[..., Learner], *, tasks: tuple[Task, ...], needs_args: bool = False,
    target_metric: bool = False, optional_dependency: bool = False,
) -> None:
    """Make ``method=name`` build ``factory(task=..., **method_args)`` for the given tasks.

    ``needs_args`` marks a method that cannot run on defaults, ``optional_dependency`` one that
    needs a package outside the base install (an extra); ``adaloss compare`` without
    ``--methods`` skips both. ``target_metric`` marks a method that optimises a named metric: the
    config key ``metric`` reaches its factory as ``metric=`` (:func:`takes_target_metric`).
    """
    if name in METHODS:
        raise ValueError(f"A method named {name!r} is already registered.")
    METHODS[name] = factory
    METHOD_TASKS[name] = tasks
    if needs_args or optional_dependency:
        _NEEDS_ARGS.add(name)
    if target_metric:
        _TARGET_METRIC.add(name)


def takes_target_metric(method: str) -> bool:
    """Whether ``method`` optimises a named metric (the config key ``metric``), e.g. ``ala``."""
    return method in _TARGET_METRIC


def methods_for(task: Task, *, runnable_on_defaults: bool = False) -> list[str]:
    """Registered methods that apply to ``task``, in registration order."""
    return [m for m, tasks in METHOD_TASKS.items()
            if task in tasks and not (runnable_on_defaults and m in _NEEDS_ARGS)]


def create_learner(method: str, *, task: Task, **method_args: Any) -> Learner:
    """Build the learner for ``method``; options the method does not take raise a clear error."""
    if method not in METHODS:
        raise unknown_name_error("method", method, METHODS)
    if task not in METHOD_TASKS[method]:
        raise ValueError(
            f"Method {method!r} applies to {list(METHOD_TASKS[method])}, but the task is {task}; "
            f"methods for {task}: {methods_for(task)}."
        )
    return call_with_options(f"method {method!r}", functools.partial(METHODS[method], task=task), method_args)


def _handcrafted(name: str) -> Callable[..., Learner]:
    def factory(*, task: Task, **loss_args: Any) -> Learner:
        return FixedLossLearner(create_loss(name, task=task, **loss_args))

    return factory


for _name, (_task, _) in HANDCRAFTED_LOSSES.items():
    register_method(_name, _handcrafted(_name), tasks=(_task,))


def _adalfl(
    *,
    task: Task,
    init_steps: int = 2500,
    online: bool = True,
    meta_lr: float = 1e-3,
    meta_batch: str = "valid",
    grad_ratio_every: int = 100,
    learn_lr: str = "off",
    lr_meta_lr: float = 1e-3,
    meta_gradient: str = "exact",
    meta_every: int = 1,
    **loss_options: Any,
) -> Learner:
    """AdaLFL with Adam(meta_lr) on φ; ``loss_options`` go to :class:`~adaloss.losses.LossNetwork`."""
    from adaloss.learners.adalfl import AdaLFLLearner
    from adaloss.losses import LossNetwork

    learner_options = ["grad_ratio_every", "init_steps", "learn_lr", "lr_meta_lr", "meta_batch", "meta_every",
                       "meta_gradient", "meta_lr", "online"]
    try:
        loss = call_with_options("the AdaLFL loss network", functools.partial(LossNetwork, task=task), loss_options)
    except TypeError as e:
        raise TypeError(f"{e} Learner options: {learner_options}.") from None
    check_positive("meta_lr", meta_lr)
    check_positive("lr_meta_lr", lr_meta_lr)
    return AdaLFLLearner(
        task=task, loss=loss, meta_optimizer=lambda p: torch.optim.Adam(p, lr=meta_lr), init_steps=init_steps,
        online=online, meta_batch=meta_batch, grad_ratio_every=grad_ratio_every,  # type: ignore[arg-type]
        learn_lr=learn_lr, lr_meta_optimizer=lambda p: torch.optim.Adam(p, lr=lr_meta_lr),  # type: ignore[arg-type]
        meta_gradient=meta_gradient, meta_every=meta_every,  # type: ignore[arg-type]
    )


def _ml3(*, task: Task, init_steps: int = 250, **options: Any) -> Learner:
    """ML3 (Bechtle et al. 2021) as the AdaLFL papers run it: Algorithm 1 only, then frozen."""
    return _adalfl(task=task, init_steps=init_steps, online=False, **options)


def _taylorglo(*, task: Task, **options: Any) -> Learner:
    """TaylorGLO (Gonzalez & Miikkulainen 2021): a Taylor-polynomial loss evolved by CMA-ES, then frozen."""
    from adaloss.learners.taylorglo import TaylorGLOLearner

    return call_with_options("method 'taylorglo'", functools.partial(TaylorGLOLearner, task=task), options)


def _learned_loss(*, task: Task, path: str) -> Learner:
    from adaloss.losses import load

    try:
        loss = load(path)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise type(e)(f"method_args.path: {e}") from e
    if getattr(loss, "task", task) != task:
        raise ValueError(f"The learned loss in {path!r} is for {loss.task}, but the task is {task}.")
    for p in loss.parameters():
        p.requires_grad_(False)
    return FixedLossLearner(loss)


def _ce_weighted(*, task: Task, power: float = 1.0, bounds: tuple[float, float] = (-3.0, 3.0)) -> Learner:
    """Cross-entropy weighted by inverse class frequency (the imbalanced protocol's oracle)."""
    from adaloss.learners.handcrafted import InverseFrequencyLearner

    return InverseFrequencyLearner(power=power, bounds=tuple(bounds))  # type: ignore[arg-type]


register_method("ce_weighted", _ce_weighted, tasks=("classification",))


def _libauc_ap(*, task: Task, **options: Any) -> Learner:
    """LibAUC's mean-average-precision loss, macro AUCPR optimised directly (the ALA protocols'
    peer; needs ``adaloss[peers]``): :class:`~adaloss.learners.peers.LibAUCAveragePrecisionLearner`."""
    from adaloss.learners.peers import LibAUCAveragePrecisionLearner

    return call_with_options("method 'libauc_ap'", LibAUCAveragePrecisionLearner, options)


register_method("libauc_ap", _libauc_ap, tasks=("classification",), optional_dependency=True)
register_method("adalfl", _adalfl, tasks=("classification", "regression"))
register_method("ml3", _ml3, tasks=("classification", "regression"))
register_method("taylorglo", _taylorglo, tasks=("classification", "regression"))
def _ala(*, task: Task, **options: Any) -> Learner:
    """ALA (Huang et al. 2019): a policy moves the loss's Φ (class-pair loss for classification,
    pair-distance loss for embedding) every K steps, rewarded by the change of a validation
    metric; options: :func:`~adaloss.learners.ala.create_ala_learner`."""
    from adaloss.learners.ala import create_ala_learner

    return create_ala_learner(task=task, **options)


register_method("learned_loss", _learned_loss, tasks=("classification", "regression"), needs_args=True)
register_method("ala", _ala, tasks=("classification", "embedding"), target_metric=True)
