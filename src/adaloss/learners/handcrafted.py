"""Training with a fixed criterion: ordinary backward and optimiser step."""

from __future__ import annotations

from torch import Tensor, nn

from adaloss.learners.base import Learner
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
        x, y = batch
        model, optimizer = self.context.model, self.context.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model(x), y)
        loss.backward()
        self.context.collective.mean_grads_(model)  # data parallel: the global-batch gradient
        optimizer.step()
        return {"loss": loss.detach()}

    def state_dict(self) -> StateDict:
        return {"loss": self.loss.state_dict()}

    def load_state_dict(self, state: StateDict) -> None:
        self.loss.load_state_dict(state["loss"])
