"""TaylorGLO: a Taylor-polynomial loss evolved offline with CMA-ES, then frozen.

Gonzalez & Miikkulainen, "Optimizing Loss Functions Through Multivariate Taylor Polynomial
Parameterization", GECCO 2021 (arXiv:2002.00059).
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from adaloss._validation import check_choice, check_int, check_positive
from adaloss.data.datasets import TensorSplit
from adaloss.data.loader import BatchLoader, iterate_batches
from adaloss.learners.adalfl import _group_hyper
from adaloss.learners.base import TrainContext, TrainingDiverged, loss_step
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.learners.search import SearchResult, cma_search
from adaloss.losses.taylor import TaylorLoss, as_theta
from adaloss.metrics import NonFiniteOutputs, create_metric, evaluate_batches
from adaloss.typing import StateDict, Task

__all__ = ["PartialTrainingFitness", "TaylorGLOLearner"]

logger = logging.getLogger("adaloss")

#: the file, under the run directory, that holds the resumable search state (JSON, see cma_search)
SEARCH_STATE_FILE = "taylorglo_search.json"
#: the pickled search state of older versions: never loaded (unpickling can run code), only warned about
LEGACY_SEARCH_STATE_FILE = "taylorglo_search.pkl"
#: check for divergence every this many partial-training steps (a device synchronisation)
_DIVERGENCE_CHECK_EVERY = 50


@dataclass(frozen=True)
class PartialTrainingFitness:
    """TaylorGLO's fitness of θ: the validation error (classification) or MSE (regression) of a
    freshly initialised model after ``steps`` steps with :class:`~adaloss.losses.TaylorLoss` (θ).

    Picklable when ``model_factory`` is, so that worker processes can evaluate candidates. The
    model is initialised from the global torch generator (seeded per candidate by
    :func:`~adaloss.learners.search.cma_search`) and the batches come from a loader seeded with
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

    def __call__(self, theta: np.ndarray, seed: int) -> float:
        device = torch.device(self.device)
        model = self.model_factory().to(device)
        model.train(self.train_mode)
        optimizer = self.optimizer_class(model.parameters(), **self.optimizer_options)
        criterion = TaylorLoss(task=self.task, theta=theta.tolist()).to(device)
        batches = BatchLoader(self.train, batch_size=self.batch_size, seed=seed,
                              augment=self.augment, device=device)  # type: ignore[arg-type]
        finite = torch.ones((), dtype=torch.bool, device=device)
        for step in range(1, self.steps + 1):
            finite &= torch.isfinite(loss_step(model, optimizer, criterion, next(batches))["loss"])
            if (step % _DIVERGENCE_CHECK_EVERY == 0 or step == self.steps) and not bool(finite):
                raise TrainingDiverged(f"the Taylor loss became non-finite by partial-training step {step}")
        metric = create_metric("error" if self.task == "classification" else "mse", task=self.task)
        batches = iterate_batches(self.valid, batch_size=self.eval_batch_size, device=device)
        try:
            return evaluate_batches(model, batches, [metric], check_finite=True).values[metric.name]
        except NonFiniteOutputs as e:
            raise TrainingDiverged(f"the partially trained model: {e}") from None


class TaylorGLOLearner(FixedLossLearner):
    """TaylorGLO (Gonzalez & Miikkulainen, GECCO 2021): CMA-ES over the 8 parameters θ of
    :class:`~adaloss.losses.TaylorLoss`, then ordinary training with the best θ, frozen.

    :meth:`prepare` runs the search: the fitness of θ is the validation error (classification)
    or MSE (regression) of a freshly initialised model after ``partial_steps`` steps with the
    run's optimiser (its class and initial hyper-parameters; the LR schedule is not applied)
    on the training split (see :class:`PartialTrainingFitness`). Candidates that diverge get
    the worst fitness of their generation. The search state is kept in
    ``run_dir/taylorglo_search.json`` after every generation, so a run killed during the search
    resumes it at the last completed generation (with ``--resume`` or not: a state file written
    with other settings is refused). The file is JSON, never unpickled; a ``taylorglo_search.pkl``
    of older versions is ignored with a warning. :meth:`step` is :class:`FixedLossLearner`'s, with θ frozen.

    Args:
        task: classification or regression (set by the method registry).
        popsize: CMA-ES population size λ.
        generations: CMA-ES generations.
        sigma: CMA-ES initial step size (the paper's 1.2).
        partial_steps: training steps of each candidate's partial training.
        workers: processes evaluating candidates in parallel, one torch thread each (default: the
            run's torch thread count, i.e. its ``threads`` CPU budget, at most ``popsize``; 1 if
            the run's model factory cannot be pickled).
        x0: the initial CMA-ES mean (default: zeros, the centroid of the authors' EvoMAL baseline).
            It is also θ before the search (zeros: a constant loss).
        seed: the search seed (default: the torch seed of the run, ``torch.initial_seed()``).
    """

    loss: TaylorLoss

    def __init__(
        self,
        *,
        task: Task = "classification",
        popsize: int = 25,
        generations: int = 50,
        sigma: float = 1.2,
        partial_steps: int = 500,
        workers: int | None = None,
        x0: Sequence[float] | None = None,
        seed: int | None = None,
    ) -> None:
        check_choice("task", task, ("classification", "regression"))
        self.task: Task = task
        self.popsize = check_int("popsize", popsize, minimum=2)
        self.generations = check_int("generations", generations, minimum=1)
        self.sigma = float(check_positive("sigma", sigma))
        self.partial_steps = check_int("partial_steps", partial_steps, minimum=1)
        self.workers = None if workers is None else check_int("workers", workers, minimum=1)
        self.x0 = as_theta(x0, name="x0")
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)
        super().__init__(TaylorLoss(task=task, theta=self.x0))
        #: the search's outcome: best fitness, per-generation best, evaluations, failures (None before)
        self.search: dict[str, Any] | None = None

    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        self.loss.to(context.device)

    # ------------------------------------------------------------------ the search
    def _fitness(self, *, portable: bool) -> PartialTrainingFitness:
        ctx = self.context
        missing = [n for n in ("model_factory", "train_split", "valid_split", "batch_size") if getattr(ctx, n) is None]
        if missing:
            why = " (the run has no validation split: set valid_fraction > 0)" if "valid_split" in missing else ""
            raise ValueError(f"TaylorGLO's search needs {missing} in the TrainContext{why}.")
        assert ctx.model_factory is not None and ctx.train_split is not None and ctx.valid_split is not None
        train, valid = ctx.train_split, ctx.valid_split
        if portable:  # plain CPU tensors travel to worker processes; each moves them to the device
            train, valid = TensorSplit(train.x.cpu(), train.y.cpu()), TensorSplit(valid.x.cpu(), valid.y.cpu())
        return PartialTrainingFitness(
            task=self.task, model_factory=ctx.model_factory, optimizer_class=type(ctx.optimizer),
            optimizer_options=_group_hyper(ctx.optimizer), train=train, valid=valid,
            batch_size=int(ctx.batch_size),  # type: ignore[arg-type]
            steps=self.partial_steps, augment=ctx.augment, device=str(ctx.device), train_mode=ctx.model.training,
        )

    def _workers(self) -> int:
        factory = self.context.model_factory
        wanted = self.workers if self.workers is not None else min(torch.get_num_threads(), self.popsize)
        if wanted == 1:
            return 1
        try:
            pickle.dumps(factory)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            if self.workers is not None:
                raise TypeError(
                    f"`workers`={self.workers} trains candidates in other processes, which needs a picklable "
                    f"model_factory (e.g. functools.partial(create_model, ...)), but pickling it failed: {e}"
                ) from e
            logger.info("TaylorGLO: the model factory cannot be pickled (%s); evaluating candidates in this process", e)
            return 1
        return wanted

    def _progress(self, bar: Any) -> Callable[[int, float, float], None]:
        def report(generation: int, best: float, seconds_left: float) -> None:
            logger.info("TaylorGLO generation %d/%d, best fitness %.4g, ~%.0f s left",
                        generation, self.generations, best, seconds_left)
            if bar is not None:
                bar.n = generation  # also right after a resume, whose first report is past generation 1
                bar.set_postfix_str(f"best {best:.4g}, ~{seconds_left:.0f} s left", refresh=True)

        return report

    def prepare(self) -> dict[str, float]:
        """Run (or resume) the CMA-ES search and freeze the best θ."""
        ctx = self.context
        workers = self._workers()
        fitness = self._fitness(portable=workers > 1)
        seed = self.seed if self.seed is not None else torch.initial_seed() % 2**31
        identity = {
            "task": self.task, "partial_steps": self.partial_steps, "model": repr(ctx.model),
            "optimizer": fitness.optimizer_class.__name__,
            "optimizer_options": repr(sorted(fitness.optimizer_options.items())),
            "batch_size": fitness.batch_size, "augment": fitness.augment, "train_size": len(fitness.train),
            "valid_size": len(fitness.valid), "train_mode": fitness.train_mode,
        }
        state_path = ctx.run_dir / SEARCH_STATE_FILE if ctx.run_dir is not None else None
        if ctx.run_dir is not None and (ctx.run_dir / LEGACY_SEARCH_STATE_FILE).exists():
            logger.warning("TaylorGLO: ignoring %s, a pickled search state of an older adaloss: pickles are never "
                           "loaded (loading one can run code); the search uses %s instead. Delete the old file.",
                           ctx.run_dir / LEGACY_SEARCH_STATE_FILE, SEARCH_STATE_FILE)
        bar = tqdm(total=self.generations, desc="TaylorGLO search", unit="gen", file=sys.stderr,
                   dynamic_ncols=True, leave=False) if ctx.progress else None
        try:
            result = cma_search(
                fitness, self.x0.double().numpy(), sigma=self.sigma, popsize=self.popsize,
                generations=self.generations, workers=workers, seed=seed, state_path=state_path,
                progress=self._progress(bar), identity=identity,
            )
        finally:
            if bar is not None:
                bar.close()
        self._finish(result)
        scalars = {"evaluations": float(result.evaluations), "failures": float(result.failures)}
        if math.isfinite(result.fitness):
            scalars["best_fitness"] = result.fitness
        return scalars

    def _finish(self, result: SearchResult) -> None:
        if math.isfinite(result.fitness):
            self.loss.set_theta(result.x.tolist())
        else:
            logger.warning("TaylorGLO: every candidate failed; training with x0 = %s", self.x0.tolist())
        self.search = {
            "best_fitness": result.fitness, "history": list(result.history), "generations": result.generations,
            "evaluations": result.evaluations, "failures": result.failures,
        }
        logger.info("TaylorGLO: best fitness %.4g after %d generations (%d failed evaluations), theta = %s",
                    result.fitness, result.generations, result.failures,
                    [round(v, 4) for v in self.loss.theta.tolist()])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> StateDict:
        return {
            "class": "TaylorLoss",
            "loss": self.loss.state_dict(),
            "loss_config": self.loss.config(),
            "search": None if self.search is None else dict(self.search),
        }

    def load_state_dict(self, state: StateDict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.search = None if state["search"] is None else dict(state["search"])

    def snapshot(self) -> dict[str, Any]:
        return self.loss.curves()
