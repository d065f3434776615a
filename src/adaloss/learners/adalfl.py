"""``method=adalfl`` and ``method=ml3``: :class:`~adaloss.methods.AdaLFL` driven by the trainer."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from torch import Tensor, nn

from adaloss._validation import check_choice, check_int, check_known_options
from adaloss.learners.base import Learner, TrainContext
from adaloss.losses.network import LossNetwork
from adaloss.methods.adalfl import INIT_STEPS, AdaLFL
from adaloss.typing import StateDict, Task

__all__ = ["ADALFL_OPTIONS", "AdaLFLLearner"]

#: the options of :class:`~adaloss.methods.AdaLFL` a run may set (``method_args``), declared and
#: defaulted there; the rest (model, optimiser, loss, collective, …) the trainer supplies
ADALFL_OPTIONS: tuple[str, ...] = tuple(
    name for name, p in inspect.signature(AdaLFL).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in ("loss", "task", "initialized", "collective")
)


class AdaLFLLearner(Learner):
    """``method=adalfl`` (and ``ml3``): :class:`~adaloss.methods.AdaLFL` driven by the trainer.

    The learner owns no logic of the method: it builds an :class:`~adaloss.methods.AdaLFL` on the
    run's model and optimiser at :meth:`bind` (``options`` passed on as they are: see
    :data:`ADALFL_OPTIONS`), runs :meth:`~adaloss.methods.AdaLFL.initialize` from the run's model
    factory and data streams in :meth:`prepare`, and feeds :meth:`~adaloss.methods.AdaLFL.step`
    the training batch and a meta batch from the validation stream (or the training batch itself).

    Args:
        task: classification or regression (set by the method registry).
        loss: the learned loss (default: a fresh :class:`~adaloss.losses.LossNetwork` for the task).
        init_steps: offline initialisation unrolls S_init run by :meth:`prepare` (Alg. 1; 0 = none).
        meta_batch: where the meta batch comes from: the validation split (paper) or the
            training batch of the same step.
        **options: :class:`~adaloss.methods.AdaLFL`'s options (``online``, ``meta_lr``,
            ``meta_every``, ``meta_gradient``, ``learn_lr``, ``grad_ratio_every``, …).
    """

    def __init__(
        self,
        *,
        task: Task = "classification",
        loss: LossNetwork | None = None,
        init_steps: int = INIT_STEPS,
        meta_batch: Literal["valid", "train"] = "valid",
        **options: Any,
    ) -> None:
        check_known_options("AdaLFL", options, ["init_steps", "meta_batch", *ADALFL_OPTIONS])
        self.task: Task = task
        self.loss = loss if loss is not None else LossNetwork(task=task)
        if self.loss.task != task:
            raise ValueError(f"The loss network is for {self.loss.task}, but the task is {task}.")
        self.init_steps = check_int("init_steps", init_steps, minimum=0)
        self.meta_batch = check_choice("meta_batch", meta_batch, ("valid", "train"))
        self.options = options
        self.online = bool(options.get("online", True))
        self.core: AdaLFL | None = None

    @property
    def criterion(self) -> nn.Module:
        return self.loss

    @property
    def steps(self) -> int:
        return self.core.steps if self.core is not None else 0

    def bind(self, context: TrainContext) -> None:
        super().bind(context)
        if self.meta_batch == "valid" and self.online and context.meta_batches is None:
            raise ValueError("`meta_batch='valid'` needs a validation split; the run has none (valid_fraction).")
        self.core = AdaLFL(context.model, context.optimizer, loss=self.loss, task=self.task,  # type: ignore[arg-type]
                           initialized=self.init_steps == 0, collective=context.collective, **self.options)

    def prepare(self) -> dict[str, float]:
        """Algorithm 1 (:meth:`AdaLFL.initialize`) on the run's streams."""
        assert self.core is not None, "bind() first"
        if self.init_steps == 0:
            return {}
        ctx = self.context
        if ctx.model_factory is None:
            raise ValueError("AdaLFL's offline initialisation needs `model_factory` in the TrainContext.")
        if self.meta_batch == "valid" and ctx.meta_batches is None:
            raise ValueError("`meta_batch='valid'` needs a validation split; the run has none (valid_fraction).")
        every, save = ctx.checkpoint_every, ctx.checkpoint

        def on_unroll(done: int) -> None:  # a kill during the offline fit loses at most `every` unrolls
            if save is not None and every and done % every == 0 and done < self.init_steps:
                save()

        return self.core.initialize(
            ctx.model_factory, ctx.train_batches, ctx.meta_batches if self.meta_batch == "valid" else None,
            steps=self.init_steps, progress=ctx.progress, on_unroll=on_unroll,
        )

    @property
    def prepared(self) -> bool:
        return self.core is None or self.core.initialized  # False only in a checkpoint taken inside initialize

    def step(self, batch: Any) -> dict[str, Tensor]:
        core = self.core
        assert core is not None, "bind() first"
        if not core.meta_due:
            return core.step(batch)
        meta = batch if self.meta_batch == "train" else next(self.context.meta_batches)  # type: ignore[arg-type]
        return core.step(batch, meta)

    def snapshot(self) -> dict[str, object]:
        return self.loss.curves()

    def state_dict(self) -> StateDict:
        assert self.core is not None, "bind() first"
        return self.core.state_dict()

    def load_state_dict(self, state: StateDict) -> None:
        assert self.core is not None, "bind() first"
        self.core.load_state_dict(state)
