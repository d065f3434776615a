"""Method name → learner, the table behind ``method=`` in configs and ``adaloss compare``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from adaloss._validation import call_with_options, unknown_name_error
from adaloss.learners.base import Learner
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.losses import HANDCRAFTED_LOSSES, OPTIONAL_LOSSES, create_loss
from adaloss.typing import Task

__all__ = ["METHODS", "METHOD_TASKS", "create_learner", "default_method", "method_defaults", "methods_for",
           "register_method", "takes_target_metric"]

#: name → factory ``(task, **method_args) -> Learner``
METHODS: dict[str, Callable[..., Learner]] = {}
#: name → the tasks the method applies to
METHOD_TASKS: dict[str, tuple[Task, ...]] = {}
#: methods that need arguments (e.g. a file) and so are left out of a default comparison
_NEEDS_ARGS: set[str] = set()
#: methods that optimise a named evaluation metric (their factory takes ``metric=``)
_TARGET_METRIC: set[str] = set()
#: name → where the method's option defaults are declared (callables and tables), see :func:`method_defaults`
_DEFAULTS_FROM: dict[str, tuple[Any, ...]] = {}
#: the method a run uses when the config names none: the task's plain handcrafted loss
DEFAULT_METHODS: dict[Task, str] = {"classification": "ce", "regression": "mse", "embedding": "contrastive"}


def register_method(
    name: str, factory: Callable[..., Learner], *, tasks: tuple[Task, ...], needs_args: bool = False,
    target_metric: bool = False, optional_dependency: bool = False, defaults_from: tuple[Any, ...] = (),
) -> None:
    """Make ``method=name`` build ``factory(task=..., **method_args)`` for the given tasks.

    ``needs_args`` marks a method that cannot run on defaults, ``optional_dependency`` one that
    needs a package outside the base install (an extra); ``adaloss compare`` without
    ``--methods`` skips both. ``target_metric`` marks a method that optimises a named metric: the
    config key ``metric`` reaches its factory as ``metric=`` (:func:`takes_target_metric`).
    ``defaults_from``: where options the factory passes on (``**options``) have their defaults —
    callables (or ``"module:attribute"`` names, imported when asked) whose keyword defaults, or
    option tables (a mapping, or a ``"module:TABLE"`` name of one), :func:`method_defaults` reports.
    """
    if name in METHODS:
        raise ValueError(f"A method named {name!r} is already registered.")
    METHODS[name] = factory
    METHOD_TASKS[name] = tasks
    if needs_args or optional_dependency:
        _NEEDS_ARGS.add(name)
    if target_metric:
        _TARGET_METRIC.add(name)
    _DEFAULTS_FROM[name] = (factory, *defaults_from)


def default_method(task: Task) -> str:
    """The method of a run whose config names none (:data:`DEFAULT_METHODS`): ``ce`` for
    classification, ``mse`` for regression, ``contrastive`` for embedding."""
    return DEFAULT_METHODS[task]


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so recorded identities compare equal."""
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def method_defaults(method: str) -> dict[str, Any]:
    """The library's defaults for ``method``'s options: the keyword defaults of its factory and of
    what the factory passes options on to, and the option tables it reads (e.g. ALA's presets);
    the first declaration of a name wins. Part of a run's identity, so that a run made under other
    library defaults is neither reused nor resumed.
    """
    if method not in METHODS:
        raise unknown_name_error("method", method, METHODS)
    import importlib
    import inspect

    found: dict[str, Any] = {}
    for source in _DEFAULTS_FROM[method]:
        if isinstance(source, str):
            module, _, attr = source.partition(":")
            source = getattr(importlib.import_module(module), attr)
            if isinstance(source, dict):  # an option table: reported under its name
                source = (attr, source)
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], str):  # a named table
            name, table = source
            if name not in found and _plain(table):
                found[name] = _as_json(table)
            continue
        for param in inspect.signature(source).parameters.values():
            if (param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and param.name != "task"
                    and param.default is not param.empty and _plain(param.default)):
                found.setdefault(param.name, _as_json(param.default))
    return dict(sorted(found.items()))


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
    register_method(_name, _handcrafted(_name), tasks=(_task,), optional_dependency=_name in OPTIONAL_LOSSES,
                    defaults_from=(HANDCRAFTED_LOSSES[_name][1],))


def _adalfl(*, task: Task, **options: Any) -> Learner:
    """AdaLFL: :class:`~adaloss.learners.AdaLFLLearner`'s options (declared on it and on
    :class:`~adaloss.methods.AdaLFL`); the rest go to :class:`~adaloss.losses.LossNetwork`."""
    from adaloss.learners.adalfl import ADALFL_OPTIONS, AdaLFLLearner
    from adaloss.losses import LossNetwork

    learner_options = {"init_steps", "meta_batch", *ADALFL_OPTIONS}
    loss_options = {k: v for k, v in options.items() if k not in learner_options}
    try:
        loss = call_with_options("the AdaLFL loss network", functools.partial(LossNetwork, task=task), loss_options)
    except TypeError as e:
        raise TypeError(f"{e} Learner options: {sorted(learner_options)}.") from None
    return AdaLFLLearner(task=task, loss=loss, **{k: v for k, v in options.items() if k in learner_options})


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


def _optimizer_peer(name: str) -> Callable[..., Learner]:
    def factory(*, task: Task, **options: Any) -> Learner:
        """The task's plain loss trained with a learning-rate-free optimiser:
        :class:`~adaloss.learners.peers.OptimizerPeerLearner`."""
        from adaloss.learners.peers import PEER_OPTIMIZERS, OptimizerPeerLearner

        recipe = call_with_options(f"method {name!r}", PEER_OPTIMIZERS[name], options)
        return OptimizerPeerLearner(create_loss(default_method(task), task=task), optimizer=recipe)

    return factory


for _name, _recipe in (("hd_sgd", "HypergradientRecipe"), ("schedulefree_sgd", "ScheduleFreeRecipe"),
                       ("prodigy", "ProdigyRecipe"), ("dadapt_sgd", "DAdaptRecipe")):
    register_method(_name, _optimizer_peer(_name), tasks=("classification", "regression"),
                    optional_dependency=_name != "hd_sgd", defaults_from=(f"adaloss.learners.peers:{_recipe}",))
_ADALFL_DEFAULTS = ("adaloss.losses.network:LossNetwork", "adaloss.learners.adalfl:AdaLFLLearner",
                    "adaloss.methods.adalfl:AdaLFL")
register_method("adalfl", _adalfl, tasks=("classification", "regression"), defaults_from=_ADALFL_DEFAULTS)
register_method("ml3", _ml3, tasks=("classification", "regression"), defaults_from=(_adalfl, *_ADALFL_DEFAULTS))
register_method("taylorglo", _taylorglo, tasks=("classification", "regression"),
                defaults_from=("adaloss.learners.taylorglo:TaylorGLOLearner", "adaloss.methods.taylorglo:TaylorGLO"))
def _ala(*, task: Task, **options: Any) -> Learner:
    """ALA (Huang et al. 2019): a policy moves the loss's Φ (class-pair loss for classification,
    pair-distance loss for embedding) every K steps, rewarded by the change of a validation
    metric; options: :func:`~adaloss.learners.ala.create_ala_learner`."""
    from adaloss.learners.ala import create_ala_learner

    return create_ala_learner(task=task, **options)


register_method("learned_loss", _learned_loss, tasks=("classification", "regression"), needs_args=True)
register_method("ala", _ala, tasks=("classification", "embedding"), target_metric=True, defaults_from=(
    "adaloss.learners.ala:create_ala_learner", "adaloss.learners.ala:ALALearner",
    "adaloss.methods.ala.scheduler:ALA", "adaloss.methods.ala.presets:ALA_PRESETS",
    "adaloss.methods.ala.presets:FAMILY_DEFAULTS", "adaloss.methods.ala.presets:PRESET_FORMS",
    "adaloss.methods.ala.presets:PRESET_FAMILIES",
    "adaloss.losses.ala:ClassPairLoss", "adaloss.losses.ala:ClassWeightLoss", "adaloss.losses.ala:FrequencyWeightLoss",
    "adaloss.losses.ala:PairDistanceLoss",
))
