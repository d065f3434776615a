"""TaylorGLO: a Taylor-polynomial loss evolved offline with CMA-ES, then frozen.

Gonzalez & Miikkulainen, "Optimizing Loss Functions Through Multivariate Taylor Polynomial
Parameterization", GECCO 2021 (arXiv:2002.00059).

:class:`TaylorGLO` is the method as an object for your own loop: it searches θ of
:class:`~adaloss.losses.TaylorLoss` against a fitness — :class:`TrainingFitness` (partial trainings
of your model on your data loaders) or any ``fitness(loss, seed) -> float``. The trainer's
:class:`~adaloss.learners.TaylorGLOLearner` runs the same object with :class:`PartialTrainingFitness`,
built from the run.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from adaloss._validation import check_choice, check_int, check_positive
from adaloss.data.batches import cycle, move_to
from adaloss.data.loader import BatchLoader, iterate_batches
from adaloss.data.types import TensorSplit
from adaloss.executors import EXECUTORS, Executor, create_executor
from adaloss.losses.taylor import TaylorLoss
from adaloss.methods.base import TrainingDiverged, loss_step
from adaloss.methods.search import GENERATIONS, POPSIZE, SIGMA, Progress, SearchResult, check_picklable, cma_search
from adaloss.metrics import Metric, NonFiniteOutputs, create_metric, evaluate_batches
from adaloss.typing import BatchForward, BatchTarget, Task

__all__ = ["LEGACY_SEARCH_STATE_FILE", "SEARCH_STATE_FILE", "LossFitness", "PartialTrainingFitness", "TaylorGLO",
           "TrainingFitness"]

logger = logging.getLogger("adaloss")

#: the file, under the run directory, that holds the resumable search state (JSON, see cma_search)
SEARCH_STATE_FILE = "taylorglo_search.json"
#: the pickled search state of older versions: never loaded (unpickling can run code), only warned about
LEGACY_SEARCH_STATE_FILE = "taylorglo_search.pkl"
#: check for divergence every this many partial-training steps (a device synchronisation)
_DIVERGENCE_CHECK_EVERY = 50


#: ``fitness(loss, seed) -> float`` to minimise: how good :class:`~adaloss.losses.TaylorLoss` ``loss`` is
#: (its θ is the candidate's); ``seed`` is the candidate's own seed (the global Python, NumPy and
#: torch generators are also seeded with it before the call)
LossFitness = Callable[[TaylorLoss, int], float]


def _partial_train(
    model: nn.Module, optimizer: Optimizer, loss: TaylorLoss, batches: Iterable[Any], steps: int, *,
    device: torch.device, forward: BatchForward | None = None, target: BatchTarget | None = None,
) -> None:
    """``steps`` ordinary steps of ``model`` with ``loss``; a non-finite loss raises :class:`TrainingDiverged`."""
    it = iter(batches)
    finite = torch.ones((), dtype=torch.bool, device=device)
    for step in range(1, steps + 1):
        batch = move_to(next(it), device)
        finite &= torch.isfinite(loss_step(model, optimizer, loss, batch, forward=forward, target=target)["loss"])
        if (step % _DIVERGENCE_CHECK_EVERY == 0 or step == steps) and not bool(finite):
            raise TrainingDiverged(f"the Taylor loss became non-finite by partial-training step {step}")


def _score(model: nn.Module, batches: Iterable[Any], metric: Metric, *, forward: BatchForward | None = None,
           target: BatchTarget | None = None) -> float:
    """``metric`` of ``model`` on ``batches`` as a value to minimise (negated if higher is better)."""
    try:
        value = evaluate_batches(model, batches, [metric], forward=forward, target=target,
                                 check_finite=True).values[metric.name]
    except NonFiniteOutputs as e:
        raise TrainingDiverged(f"the partially trained model: {e}") from None
    return -value if metric.higher_is_better else value


def _default_metric(task: Task) -> Metric:
    return create_metric("error" if task == "classification" else "mse", task=task)


@dataclass(frozen=True)
class TrainingFitness:
    """TaylorGLO's fitness for your own model and data: ``metric`` on ``valid_data`` of a fresh
    ``model_factory()`` after ``steps`` steps of ``optimizer_factory(model.parameters())`` on
    ``train_data`` with the candidate loss (lower is better; a higher-is-better metric is negated).

    ``train_data`` / ``valid_data``: re-iterables of batches (``DataLoader``\\ s, lists); the training
    batches are cycled (a shuffling ``DataLoader`` reshuffles each pass, drawing from the global torch
    generator, which the search seeds per candidate). ``forward`` / ``target`` as in
    :class:`~adaloss.AdaLFL`. ``metric``: a :class:`~adaloss.metrics.Metric` or a metric name
    (default: ``error`` for classification, ``mse`` for regression). ``device``: where the model is
    trained (default: wherever ``model_factory`` puts it). Picklable, for ``workers > 1``, when its
    parts are (a module-level factory or ``functools.partial``, not a lambda).
    """

    model_factory: Callable[[], nn.Module]
    optimizer_factory: Callable[[Iterable[nn.Parameter]], Optimizer]
    train_data: Iterable[Any]
    valid_data: Iterable[Any]
    steps: int = 500
    metric: Metric | str | None = None
    forward: BatchForward | None = None
    target: BatchTarget | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        if isinstance(self.metric, str):
            create_metric(self.metric)  # an unknown name raises here, naming the registered metrics
        elif self.metric is not None and not isinstance(self.metric, Metric):
            raise TypeError(f"Expected `metric` to be an adaloss Metric, a metric name or None, but got "
                            f"{type(self.metric).__name__}.")

    def __call__(self, loss: TaylorLoss, seed: int) -> float:
        model = self.model_factory()
        if self.device is not None:
            model = model.to(self.device)
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        model.train()
        loss = loss.to(device)
        metric = self.metric if isinstance(self.metric, Metric) else (
            create_metric(self.metric, task=loss.task) if self.metric else _default_metric(loss.task))
        _partial_train(model, self.optimizer_factory(model.parameters()), loss,
                       cycle(self.train_data, name="train_data"), self.steps, device=device,
                       forward=self.forward, target=self.target)
        return _score(model, self.valid_data, metric, forward=self.forward, target=self.target)


@dataclass(frozen=True)
class PartialTrainingFitness:
    """TaylorGLO's fitness inside the trainer: the validation error (classification) or MSE
    (regression) of a freshly initialised model after ``steps`` steps with the candidate loss, on
    the run's splits (seeded :class:`~adaloss.data.BatchLoader`, the run's augmentation).

    Picklable when ``model_factory`` is, so that worker processes can evaluate candidates. The
    model is initialised from the global torch generator (seeded per candidate by
    :func:`~adaloss.methods.search.cma_search`) and the batches come from a loader seeded with
    the candidate's seed. A loss that becomes non-finite raises :class:`TrainingDiverged`.
    """

    task: Task
    model_factory: Callable[[], nn.Module]
    optimizer_class: type[Optimizer]
    optimizer_options: dict[str, Any]
    train: TensorSplit
    valid: TensorSplit
    batch_size: int
    steps: int
    augment: str = "none"
    device: str = "cpu"
    train_mode: bool = True
    eval_batch_size: int = 1000

    def __call__(self, loss: TaylorLoss, seed: int) -> float:
        device = torch.device(self.device)
        model = self.model_factory().to(device)
        model.train(self.train_mode)
        optimizer = self.optimizer_class(model.parameters(), **self.optimizer_options)
        batches = BatchLoader(self.train, batch_size=self.batch_size, seed=seed,
                              augment=self.augment, device=device)  # type: ignore[arg-type]
        _partial_train(model, optimizer, loss.to(device), batches, self.steps, device=device)
        valid = iterate_batches(self.valid, batch_size=self.eval_batch_size, device=device)
        return _score(model, valid, _default_metric(self.task))


@dataclass(frozen=True)
class _OnTheta:
    """``fitness(loss, seed)`` as the ``(x, seed)`` callable that :func:`cma_search` minimises."""

    fitness: LossFitness
    task: Task

    def __call__(self, x: np.ndarray, seed: int) -> float:
        return float(self.fitness(TaylorLoss(task=self.task, theta=x.tolist()), seed))


class TaylorGLO:
    """TaylorGLO (Gonzalez & Miikkulainen, GECCO 2021) as an object: CMA-ES over the 8 parameters θ
    of ``loss`` (:class:`~adaloss.losses.TaylorLoss`) against ``fitness``; :meth:`search` sets the
    best θ into ``loss`` and returns it, frozen, to train with in your own loop.

    Example::

        fitness = adaloss.TrainingFitness(make_model, lambda p: torch.optim.SGD(p, lr=0.01),
                                          train_loader, valid_loader, steps=500)
        loss = adaloss.TaylorGLO(fitness, popsize=25, generations=50).search()
        for x, y in train_loader:                    # then ordinary training with the found loss
            optimizer.zero_grad(); loss(model(x), y).backward(); optimizer.step()

    Candidate ``i`` of generation ``g`` is evaluated with its own fixed seed (the global generators
    are seeded with it), in this process or in ``workers`` processes (then ``fitness`` must be
    picklable); the result does not depend on ``workers``. A candidate whose fitness raises or is
    not finite ranks below every successful one of its generation. With ``state_path`` the search
    is kept (JSON, numbers and strings only) after every generation and a later :meth:`search` with
    the same settings resumes it with the same result (:func:`~adaloss.methods.search.cma_search`).

    Args:
        fitness: ``fitness(loss, seed) -> float`` to minimise, e.g. :class:`TrainingFitness`.
        loss: the loss to search θ for; its θ is the initial CMA-ES mean (default: a
            :class:`~adaloss.losses.TaylorLoss` for ``task`` with θ = 0, the centroid of the
            authors' EvoMAL baseline).
        task: ``"classification"`` or ``"regression"`` (when ``loss`` is not given).
        popsize: CMA-ES population size λ.
        generations: CMA-ES generations.
        sigma: CMA-ES initial step size (the paper's 1.2).
        seed: the search seed.
        workers: processes evaluating candidates (1: this process).
        executor: evaluate each generation's candidates as tasks elsewhere instead — ``"ray"``,
            ``"slurm"``, or an :class:`~adaloss.executors.Executor` (``None``/``"local"``: ``workers``);
            ``fitness`` must then be picklable; the result equals ``workers=1``'s.
        state_path: a JSON file that keeps the search resumable (``None``: not kept).
        identity: extra settings (JSON values) stored in the state file; resuming with others raises.
        progress: ``progress(generation, best_fitness, seconds_left)`` after each generation.
    """

    def __init__(
        self,
        fitness: LossFitness,
        *,
        loss: TaylorLoss | None = None,
        task: Task = "classification",
        popsize: int = POPSIZE,
        generations: int = GENERATIONS,
        sigma: float = SIGMA,
        seed: int = 0,
        workers: int = 1,
        executor: Executor | Literal["local", "ray", "slurm"] | None = None,
        state_path: str | os.PathLike[str] | None = None,
        identity: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> None:
        if not callable(fitness):
            raise TypeError(f"Expected `fitness` to be a callable fitness(loss, seed) -> float, but got "
                            f"{type(fitness).__name__}.")
        if loss is not None and not isinstance(loss, TaylorLoss):
            raise TypeError(f"Expected `loss` to be an adaloss.TaylorLoss, but got {type(loss).__name__}.")
        self.fitness = fitness
        self.loss = loss if loss is not None else TaylorLoss(task=check_choice("task", task, ("classification",
                                                                                                "regression")))
        self.popsize = check_int("popsize", popsize, minimum=2)
        self.generations = check_int("generations", generations, minimum=1)
        self.sigma = float(check_positive("sigma", sigma))
        self.seed = check_int("seed", seed, minimum=0)
        self.workers = check_int("workers", workers, minimum=1)
        if executor is not None and not isinstance(executor, Executor):
            check_choice("executor", executor, EXECUTORS)
        if executor not in (None, "local") and self.workers > 1:
            raise ValueError(f"Give either `workers` (local processes) or `executor`, but got workers={workers} and "
                             f"executor={getattr(executor, 'name', executor)!r}.")
        self.executor = executor
        self.state_path = state_path
        self.identity = dict(identity or {})
        self.progress = progress
        #: the last search's outcome (``None`` before :meth:`search`)
        self.result: SearchResult | None = None

    def search(self) -> TaylorLoss:
        """Run (or resume) the search; set the best θ into :attr:`loss` (kept as it is if every
        candidate failed) and return it."""
        remote = self.executor not in (None, "local")
        if self.workers > 1 or remote:
            check_picklable(self.fitness, what="`fitness`", workers=max(self.workers, 2))
        x0 = self.loss.theta.detach().cpu().double().numpy()
        executor = create_executor(self.executor) if remote else None
        try:
            result = cma_search(
                _OnTheta(self.fitness, self.loss.task), x0, sigma=self.sigma, popsize=self.popsize,
                generations=self.generations, workers=self.workers, seed=self.seed, state_path=self.state_path,
                progress=self.progress, identity=self.identity, executor=executor,
            )
        finally:
            if executor is not None and not isinstance(self.executor, Executor):
                executor.close()  # one this search started
        if math.isfinite(result.fitness):
            self.loss.set_theta(result.x.tolist())
        else:
            logger.warning("TaylorGLO: every candidate failed; keeping theta = %s", x0.tolist())
        self.result = result
        logger.info("TaylorGLO: best fitness %.4g after %d generations (%d failed evaluations), theta = %s",
                    result.fitness, result.generations, result.failures,
                    [round(v, 4) for v in self.loss.theta.tolist()])
        return self.loss

    def summary(self) -> dict[str, Any] | None:
        """The last search as plain values: best fitness, per-generation best, evaluations, failures."""
        r = self.result
        if r is None:
            return None
        return {"best_fitness": r.fitness, "history": list(r.history), "generations": r.generations,
                "evaluations": r.evaluations, "failures": r.failures}
