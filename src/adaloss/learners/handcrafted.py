"""Training with a fixed criterion: ordinary backward and optimiser step."""

from __future__ import annotations

from torch import Tensor, nn

from adaloss.learners.base import Learner, loss_step
from adaloss.typing import Batch, StateDict

__all__ = ["FixedLossLearner"]


class FixedLossLearner(Learner):
    """Minimise a fixed criterion ``loss(model(x), y)`` with the run's optimiser.

    Args:
        loss: any criterion module (a handcrafted loss, or a previously learned one).
    """

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss

    @property
    def criterion(self) -> nn.Module:
        return self.loss

    def step(self, batch: Batch) -> dict[str, Tensor]:
        ctx = self.context
        return loss_step(ctx.model, ctx.optimizer, self.loss, batch, collective=ctx.collective)

    def state_dict(self) -> StateDict:
        return {"loss": self.loss.state_dict()}

    def load_state_dict(self, state: StateDict) -> None:
        self.loss.load_state_dict(state["loss"])
