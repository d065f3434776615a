"""The extension point through which a method plugs into the trainer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from adaloss.distributed import Collective, LocalCollective
from adaloss.methods.base import TrainingDiverged, loss_step
from adaloss.typing import StateDict, Task

if TYPE_CHECKING:
    from adaloss.data.types import TensorSplit

__all__ = ["Learner", "RunOptimizer", "TrainContext", "TrainingDiverged", "loss_step"]


@dataclass(frozen=True)
class RunOptimizer:
    """The run's optimiser settings, which a method bringing its own optimiser
    (:meth:`Learner.create_optimizer`) reads: its learning rate, momentum, Nesterov flag and
    weight decay, and the number of base steps (for warm-ups)."""

    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    steps: int = 0


@dataclass
class TrainContext:
    """What the trainer hands a learner once, before the first step.

    Attributes:
        model: the base model; its parameters are the single source of truth between steps.
        optimizer: the base optimiser. A learner that computes the update functionally writes
            the new parameters and optimiser state back before its ``step`` returns.
        scheduler: the LR schedule, stepped by the trainer after each ``learner.step``.
        task: classification or regression.
        meta_batches: an endless stream of batches from the validation split, for learners that
            meta-learn (``None`` when the run has no validation split).
        train_batches: the training stream itself, for offline searches run in ``prepare``.
        device: where batches live.
        model_factory: builds a freshly initialised base model (offline searches that restart
            training from scratch need it; picklable when the trainer is built from a config).
        run_dir: the run directory, where an offline search keeps its resumable state.
        train_split: the whole training split behind ``train_batches``.
        valid_split: the whole validation split (``None`` when the run has none).
        batch_size: the training batch size.
        augment: the training augmentation.
        progress: whether the run shows progress bars (long offline searches show their own).
        collective: the ranks' collectives under torchrun (a no-op in one process); a learner
            averages its gradients with it so that every rank keeps the same model.
        total_steps: the run's number of base steps T (for learners whose state uses ``t / T``).
        checkpoint: saves the whole training state now (``None``: the run keeps no checkpoints);
            long offline work in ``prepare`` calls it every ``checkpoint_every`` units of work,
            so a killed run resumes inside ``prepare`` (see :attr:`Learner.prepared`).

    The last six are filled by the trainer; searches that train fresh models in other
    processes rebuild their data streams from them.
    """

    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler | None
    task: Task
    meta_batches: Iterator[Any] | None
    train_batches: Iterator[Any]
    device: torch.device
    model_factory: Callable[[], nn.Module] | None = None
    run_dir: Path | None = None
    train_split: TensorSplit | None = None
    valid_split: TensorSplit | None = None
    batch_size: int | None = None
    augment: Literal["none", "crop_flip"] = "none"
    progress: bool = False
    total_steps: int | None = None
    collective: Collective = field(default_factory=LocalCollective)
    checkpoint: Callable[[], None] | None = None
    checkpoint_every: int = 0


class Learner(ABC):
    """How one base step comes about, and what is learned alongside it.

    The trainer calls :meth:`bind` once, :meth:`prepare` once on a fresh (not resumed) run, then
    :meth:`step` once per base step. A learner knows nothing of files, logging or checkpoints:
    it exposes :meth:`state_dict` / :meth:`load_state_dict` and returns scalars from ``step``.
    """

    context: TrainContext
    #: Under torchrun: ``True`` = the ranks train one model on shards of a global batch (the
    #: learner averages gradients); ``False`` = each rank is an independent worker with its own
    #: model, seed, data order and checkpoint, sharing only what the learner synchronises (ALA).
    data_parallel: ClassVar[bool] = True
    #: ``True``: :meth:`step` receives ``(x, y, index)`` batches, ``index`` the rows' positions in
    #: the training split (``BatchLoader(return_index=True)``), for losses with per-example state.
    needs_index: ClassVar[bool] = False

    def bind(self, context: TrainContext) -> None:
        """Attach to the run's model, optimiser and data streams."""
        self.context = context

    def create_optimizer(self, params: list[nn.Parameter], run: RunOptimizer) -> Optimizer | None:
        """The optimiser this method trains with in place of the run's (built before :meth:`bind`),
        or ``None`` (default): the run's own ``optimizer``."""
        return None

    def prepare(self) -> dict[str, float]:
        """Offline work before step 0 of a fresh run (e.g. a loss search); returns scalars to log.

        A learner whose :attr:`prepared` can be ``False`` in a checkpoint must continue its work
        where that checkpoint left it (the trainer calls ``prepare`` again on resume)."""
        return {}

    @property
    def prepared(self) -> bool:
        """Whether :meth:`prepare`'s work is complete (``False`` in a checkpoint taken inside it)."""
        return True

    @abstractmethod
    def step(self, batch: Any) -> dict[str, Tensor]:
        """Do one base update on ``batch`` (and any meta-update).

        Returns:
            Detached scalar tensors to log, at least ``"loss"`` (the loss the base model was
            trained with on this batch). Tensors, not floats: the trainer reads them only at
            logging steps, so the step never waits on a device synchronisation.
        """

    @property
    @abstractmethod
    def criterion(self) -> nn.Module:
        """The loss the base model is currently trained with."""

    def state_dict(self) -> StateDict:
        """Everything needed to continue exactly; plain containers and tensors only."""
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict`."""

    def artifacts(self) -> dict[str, StateDict]:
        """Files the trainer keeps in the run directory for reuse, by file name (e.g. ALA's
        ``policy.pt``): written with :func:`adaloss.checkpoint.save_checkpoint` whenever a
        snapshot or checkpoint is taken. A learner itself writes no files."""
        return {}

    def snapshot(self) -> dict[str, Any] | None:
        """A JSON-serialisable picture of what is learned (e.g. the loss shape), or ``None``.

        The trainer writes it to ``snapshots.jsonl`` after ``prepare`` and at every evaluation.
        """
        return None
