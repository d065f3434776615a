"""``method=taylorglo``: :class:`~adaloss.methods.TaylorGLO` driven by the trainer."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from adaloss._validation import check_choice, check_int, check_positive
from adaloss.data.types import TensorSplit
from adaloss.executors import EXECUTORS, create_executor
from adaloss.learners.base import TrainContext
from adaloss.learners.handcrafted import FixedLossLearner
from adaloss.losses.taylor import TaylorLoss, as_theta
from adaloss.methods.base import group_hyperparameters
from adaloss.methods.search import GENERATIONS, POPSIZE, SIGMA, check_picklable
from adaloss.methods.taylorglo import LEGACY_SEARCH_STATE_FILE, SEARCH_STATE_FILE, PartialTrainingFitness, TaylorGLO
from adaloss.typing import StateDict, Task

__all__ = ["TaylorGLOLearner"]

logger = logging.getLogger("adaloss")


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
        executor: ``"ray"`` or ``"slurm"``: evaluate candidates as tasks there instead of ``workers``
            local processes (:class:`~adaloss.methods.TaylorGLO`'s ``executor``); ``executor_options``
            go to :func:`~adaloss.executors.create_executor` (e.g. ``address``, ``partition``).
        executor_options: options of that executor.
        x0: the initial CMA-ES mean (default: zeros, the centroid of the authors' EvoMAL baseline).
            It is also θ before the search (zeros: a constant loss).
        seed: the search seed (default: the torch seed of the run, ``torch.initial_seed()``).
    """

    loss: TaylorLoss

    def __init__(
        self,
        *,
        task: Task = "classification",
        popsize: int = POPSIZE,
        generations: int = GENERATIONS,
        sigma: float = SIGMA,
        partial_steps: int = 500,
        workers: int | None = None,
        executor: Literal["local", "ray", "slurm"] = "local",
        executor_options: dict[str, Any] | None = None,
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
        self.executor: Literal["local", "ray", "slurm"] = check_choice("executor", executor, EXECUTORS)  # type: ignore[arg-type]
        self.executor_options = dict(executor_options or {})
        if self.executor_options and self.executor == "local":
            raise ValueError(f"`executor_options` apply to executor='ray' or 'slurm', but executor='local' got "
                             f"{sorted(self.executor_options)}.")
        if self.executor != "local" and self.workers not in (None, 1):
            raise ValueError(f"Give either `workers` (local processes) or `executor`, but got workers={workers} and "
                             f"executor={executor!r}.")
        self.x0 = as_theta(x0, name="x0")
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)
        super().__init__(TaylorLoss(task=task, theta=self.x0))
        #: the search's outcome: best fitness, per-generation best, evaluations, failures (None before)
        self.search_summary: dict[str, Any] | None = None

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
            optimizer_options=group_hyperparameters(ctx.optimizer), train=train, valid=valid,
            batch_size=int(ctx.batch_size),  # type: ignore[arg-type]
            steps=self.partial_steps, augment=ctx.augment, device=str(ctx.device), train_mode=ctx.model.training,
        )

    def _workers(self) -> int:
        factory = self.context.model_factory
        if self.executor != "local":
            check_picklable(factory, what="the model_factory (e.g. functools.partial(create_model, ...))",
                            workers=self.popsize)
            return 1
        wanted = self.workers if self.workers is not None else min(torch.get_num_threads(), self.popsize)
        if wanted == 1:
            return 1
        try:
            check_picklable(factory, what="the model_factory (e.g. functools.partial(create_model, ...))",
                            workers=wanted)
        except TypeError as e:
            if self.workers is not None:
                raise
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
        """Run (or resume) the CMA-ES search (:class:`TaylorGLO`) and freeze the best θ."""
        ctx = self.context
        workers = self._workers()
        remote = self.executor != "local"
        fitness = self._fitness(portable=workers > 1 or remote)
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
        self.loss.set_theta(self.x0)  # the search starts from x0 (θ before the search)
        executor = create_executor(self.executor, **self.executor_options) if remote else None
        searcher = TaylorGLO(fitness, loss=self.loss, popsize=self.popsize, generations=self.generations,
                             sigma=self.sigma, seed=seed, workers=workers, executor=executor, state_path=state_path,
                             identity=identity, progress=self._progress(bar))
        try:
            searcher.search()
        finally:
            if bar is not None:
                bar.close()
            if executor is not None:
                executor.close()
        self.search_summary = searcher.summary()
        result = searcher.result
        assert result is not None
        scalars = {"evaluations": float(result.evaluations), "failures": float(result.failures)}
        if math.isfinite(result.fitness):
            scalars["best_fitness"] = result.fitness
        return scalars

    # ------------------------------------------------------------------ state
    def state_dict(self) -> StateDict:
        return {
            "class": "TaylorLoss",
            "loss": self.loss.state_dict(),
            "loss_config": self.loss.config(),
            "search": None if self.search_summary is None else dict(self.search_summary),
        }

    def load_state_dict(self, state: StateDict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.search_summary = None if state["search"] is None else dict(state["search"])

    def snapshot(self) -> dict[str, Any]:
        return self.loss.curves()
